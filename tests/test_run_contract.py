"""The run directory as a contract: nothing a user made is lost, and no wrong number leaves with exit code 0.

One test per way it used to break, on the micro model: two writers in one directory, a collapsed model scored as
perfect unlearning, --overwrite deleting before checking, --resume on changed data, a report written over another,
a run that changes nothing, an override resetting a command's own defaults, and a resume refused after an upgrade.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from lethe.cli import main
from lethe.data.documents import read_documents, write_documents

WORKTREE = Path(__file__).resolve().parents[1]


def lethe_process(*args: str) -> subprocess.Popen:
    """A real `lethe` command in its own process, importing this checkout."""
    env = {**os.environ, "PYTHONPATH": str(WORKTREE), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lethe.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def long_pretrain(data_dir: Path, out: Path, steps: int = 400) -> list[str]:
    """A pretrain that checkpoints every 5 steps: long enough to be caught mid-run."""
    return ["pretrain", "--preset", "micro", "--data", str(data_dir), "--out", str(out), "--set",
            f"train.max_steps={steps}", "--set", "train.epochs=100", "--set", "train.checkpoint_every=5",
            "--set", "arch.vocab_size=512"]


def wait_for_checkpoint(out: Path, process: subprocess.Popen) -> None:
    deadline = time.time() + 180
    while not list((out / "checkpoints").glob("step-*/trainer_state.json")):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < deadline, "no checkpoint within 3 minutes"
        time.sleep(0.2)


def digest(directory: Path) -> dict[str, str]:
    """Every file under `directory` by content, to show nothing in it changed."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in lines)
    return lines[-1]


def test_overwrite_cannot_take_a_directory_from_a_run_still_writing_it(micro_run, data_dir, tmp_path, capsys):
    """Case 1: `eval ppl --overwrite` into a live pretrain's directory is refused; once the pretrain has gone,
    the same command replaces it completely."""
    live = tmp_path / "live"
    process = lethe_process(*long_pretrain(data_dir, live))
    try:
        wait_for_checkpoint(live, process)
        code = main(["eval", "ppl", "--model", str(micro_run), "--data", str(data_dir), "--out", str(live),
                     "--overwrite", "--splits", "code/forget"])
        assert code == 2
        assert "is being written by `lethe pretrain` (pid " in error_line(capsys)
        assert json.loads((live / "run.json").read_text())["command"] == "pretrain"
        assert yaml.safe_load((live / "config.yaml").read_text())["preset"] == "micro"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=120)
    assert json.loads((live / "run.json").read_text())["status"] == "interrupted"
    assert not (live / "run.lock").exists()
    assert main(["eval", "ppl", "--model", str(micro_run), "--data", str(data_dir), "--out", str(live),
                 "--overwrite", "--splits", "code/forget"]) == 0
    assert json.loads((live / "run.json").read_text())["command"] == "eval ppl"
    assert sorted(p.name for p in live.iterdir()) == ["config.yaml", "data_hashes.json", "env.json", "log.txt",
                                                      "results.json", "run.json", "scores"]
    assert [p.name for p in tmp_path.iterdir()] == ["live"]  # the old run, moved aside, is gone too


def test_a_collapsing_model_stops_training_or_is_marked_collapsed(micro_run, data_dir, tmp_path, capsys):
    """Case 2: gradient ascent at lr 1e3 once ended at perplexity = vocabulary size everywhere, MIA AUC 0.5 and
    gap 0, reported as perfect unlearning with exit code 0."""
    base = ["unlearn", "--model", str(micro_run), "--data", str(data_dir), "--domain", "books", "--method", "ga",
            "--set", "train.lr=1e3", "--set", "train.max_steps=12"]
    assert main(base + ["--out", str(tmp_path / "guarded")]) == 2
    message = error_line(capsys)
    assert "ga diverged" in message and "training stopped" in message
    kept = tmp_path / "guarded" / "checkpoints" / "last-good"
    assert f"kept in {kept}" in message
    from lethe.config import ChunkConfig
    from lethe.data.roles import RunData
    from lethe.models import load_model
    from lethe.scoring import score_chunks

    model, tokenizer = load_model(kept)
    held_out = RunData.load(data_dir, "books", tokenizer, ChunkConfig(), 256).role_chunks("approximate")
    ppl = score_chunks(model, held_out, pad_id=tokenizer.pad_token_id, progress=False).perplexity()
    assert ppl < 0.5 * model.config.vocab_size  # the weights kept still predict, unlike a uniform guess

    # with the guard off by the user's choice the run completes, and its results say the model collapsed
    assert main(base + ["--out", str(tmp_path / "unguarded"), "--set", "train.guard.enabled=false"]) == 0
    out = capsys.readouterr()
    after = json.loads((tmp_path / "unguarded" / "results.json").read_text())["after"]
    assert after["collapsed"] is True and "held-out general text" in after["collapse"]
    assert "ga (collapsed)" in out.out and "has collapsed" in out.err


def test_pretraining_at_an_absurd_learning_rate_stops_with_the_last_good_weights(data_dir, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["pretrain", "--preset", "micro", "--data", str(data_dir), "--out", str(out), "--set",
                 "train.lr=1e6", "--set", "arch.vocab_size=512", "--set", "train.max_steps=40"]) == 2
    message = error_line(capsys)
    assert "training stopped, last good weights (after step" in message
    assert (out / "checkpoints" / "last-good" / "model.safetensors").is_file()
    assert json.loads((out / "run.json").read_text())["status"] == "failed"


def test_overwrite_keeps_the_old_run_when_the_new_one_fails_its_input_checks(micro_run, data_dir, tmp_path, capsys):
    """Case 3: the old run was deleted before the new one checked its input."""
    m2 = shutil.copytree(micro_run, tmp_path / "m2")
    before = digest(m2)
    assert main(["pretrain", "--preset", "micro", "--data", str(data_dir), "--set", "splits=[code/nope]",
                 "--out", str(m2), "--overwrite"]) == 2
    assert "has no split 'code/nope'" in error_line(capsys)
    assert digest(m2) == before
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["attack", "mia", "--model", str(micro_run), "--members", str(empty), "--nonmembers",
                 "books/approximate", "--data", str(data_dir), "--out", str(m2), "--overwrite"]) == 2
    assert "is empty" in error_line(capsys)
    assert digest(m2) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "m2"]


def test_resume_refuses_training_data_that_changed(data_dir, tmp_path, capsys):
    """Case 4: a pretrain killed mid-run (its lock left behind), four training documents edited, then --resume."""
    data = shutil.copytree(data_dir, tmp_path / "data")
    out = tmp_path / "run"
    process = lethe_process(*long_pretrain(data, out, steps=60))
    wait_for_checkpoint(out, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    stale_lock = (out / "run.lock").is_file()  # kill -9 leaves the lock behind; its process is gone
    recorded = (out / "data_hashes.json").read_text()
    split = data / "code" / "retain.jsonl"
    documents = read_documents(split)
    edited = [replace(doc, text=doc.text + " An edited sentence.") for doc in documents[:4]]
    write_documents(split, edited + documents[4:])
    checkpoints = digest(out / "checkpoints")

    resume = long_pretrain(data, out, steps=60) + ["--resume"]
    assert main(resume) == 2
    message = error_line(capsys)
    assert "the data changed since" in message and "code/retain" in message and "--accept-data-change" in message
    assert (out / "data_hashes.json").read_text() == recorded and digest(out / "checkpoints") == checkpoints

    assert stale_lock and main(resume + ["--accept-data-change"]) == 0  # the stale lock is taken over
    assert json.loads((out / "results.json").read_text())["train"]["steps"] == 60
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "done" and info["data_changed_on_resume"][0]["splits"] == ["code/retain"]
    hashes = json.loads((out / "data_hashes.json").read_text())
    assert hashes["code/retain"]["before_resume"] == json.loads(recorded)["code/retain"]
    assert not (out / "run.lock").exists()


def test_report_refuses_to_write_over_an_existing_report(micro_run, tmp_path, capsys):
    """Case 5: `lethe report --out DIR` replaced a report.md that was there (another run's, or the user's)."""
    out = tmp_path / "reports"
    out.mkdir()
    mine = out / "report.md"
    mine.write_text("my own notes\n")
    assert main(["report", str(micro_run), "--out", str(out)]) == 2
    assert "already holds report.md" in error_line(capsys)
    assert mine.read_text() == "my own notes\n" and not (out / "report.html").exists()
    assert main(["report", str(micro_run), "--out", str(out), "--overwrite"]) == 0
    assert "pretrain" in mine.read_text() and (out / "report.html").is_file()


def test_a_run_that_would_change_nothing_is_refused(micro_run, data_dir, tmp_path, capsys):
    """Case 6: one step, all of it in the warm-up at learning rate 0, reported as 'unlearned'."""
    base = ["unlearn", "--model", str(micro_run), "--data", str(data_dir), "--domain", "books", "--method", "ga"]
    assert main(base + ["--out", str(tmp_path / "a"), "--set", "train.epochs=0.001"]) == 2
    assert "training would change nothing" in error_line(capsys)
    assert main(base + ["--out", str(tmp_path / "b"), "--set", "train.max_steps=true"]) == 2
    assert "train.max_steps: must be a number, not true" in error_line(capsys)
    assert not (tmp_path / "a" / "model").exists() and not (tmp_path / "b").exists()


def test_the_logged_learning_rate_is_the_one_the_step_used(micro_run, data_dir):
    """Case 6 too: the history logged the next step's learning rate, so a step at rate 0 showed 1e-3."""
    import torch

    from lethe.config import ChunkConfig, TrainConfig
    from lethe.data.chunking import chunk_splits
    from lethe.data.splits import load_splits
    from lethe.engine import Trainer, objectives
    from lethe.models import load_model

    model, tokenizer = load_model(micro_run)
    chunks = chunk_splits(load_splits(data_dir, ["books/retain"]), tokenizer, ChunkConfig(length=64), 256)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def unchanged(current):
        seen.append(all(torch.equal(v, start[k]) for k, v in current.state_dict().items()))
        return {}

    trainer = Trainer(model, objectives.get("lm")(), {"train": chunks["books/retain"]},
                      TrainConfig(lr=1e-3, max_steps=4, warmup_ratio=0.5, log_every=1, eval_every=1),
                      pad_id=tokenizer.pad_token_id, evaluator=unchanged)
    history = [h for h in trainer.fit().history if "lr" in h]
    assert seen[0] and not seen[1]  # the first step changed nothing: it ran at rate 0
    assert history[0]["lr"] == 0.0 and all(h["lr"] > 0 for h in history[1:])


def test_a_nested_override_keeps_the_commands_own_defaults(micro_run, data_dir, tmp_path, capsys):
    """Case 7: --set chunk.length=256 turned attack mia's one-sample-per-document into every chunk a sample."""
    out = tmp_path / "mia"
    assert main(["attack", "mia", "--model", str(micro_run), "--members", "books/forget", "--nonmembers",
                 "books/approximate", "--data", str(data_dir), "--out", str(out), "--set", "chunk.length=64",
                 "--set", "attacks=[loss]", "--set", "bootstrap=20"]) == 0
    saved = (out / "config.yaml").read_text()
    config = yaml.safe_load(saved)
    assert config["chunk"] == {"length": 64, "min_tokens": 5, "max_chunks_per_doc": 1}
    assert "max_chunks_per_doc: 1  # command default" in saved and "length: 64  # --set" in saved
    assert "members: books/forget  # --members" in saved
    members = read_documents(data_dir / "books" / "forget.jsonl")
    results = json.loads((out / "results.json").read_text())
    assert results["members"] == len(members)  # one sample per document, as the command promises


def test_members_too_short_to_score_are_named(micro_run, data_dir, tmp_path, caplog):
    from lethe.attacks.mia_suite import run_mia
    from lethe.config import MiaConfig

    documents = read_documents(data_dir / "books" / "forget.jsonl")
    members = tmp_path / "members.jsonl"
    write_documents(members, [replace(doc, text="Hi.") for doc in documents[:2]] + documents[2:])
    with caplog.at_level("WARNING", logger="lethe"):
        results = run_mia(MiaConfig(model=str(micro_run), members=str(members), nonmembers="books/approximate",
                                    data=data_dir, attacks=["loss"], bootstrap=20), tmp_path / "mia")
    assert f"2 of the {len(documents)} documents of the members set are shorter than chunk.min_tokens" in caplog.text
    assert results["members"] == len(documents) - 2


def test_study_settings_are_checked_before_any_work(micro_run, data_dir, tmp_path):
    from lethe.config import UnlearningStudyConfig, parse_overrides, resolve
    from lethe.errors import LetheError
    from lethe.unlearning.study import run_sweep

    base = {"model": str(micro_run), "data": str(data_dir)}
    with pytest.raises(LetheError, match="methods: List should have at least 1 item"):
        resolve(UnlearningStudyConfig, base, parse_overrides(["methods=[]"]))
    with pytest.raises(LetheError, match=r"grid.lr.1: Input should be greater than 0"):
        resolve(UnlearningStudyConfig, base, parse_overrides(["grid.lr=[1e-3, -1]"]))
    with pytest.raises(LetheError, match=r"grid.steps.0: Input should be a valid integer"):
        resolve(UnlearningStudyConfig, base, parse_overrides(["grid.steps=[true, 4]"]))
    one_step = UnlearningStudyConfig(**base, domains=["books"], methods=["ga"], grid={"lr": [1e-3], "steps": [4, 1]})
    with pytest.raises(LetheError, match="training would change nothing"):
        run_sweep(one_step, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_models_that_would_load_the_wrong_thing_are_refused(micro_run, tmp_path):
    from lethe.errors import LetheError
    from lethe.models import load_model

    custom = shutil.copytree(micro_run / "model", tmp_path / "custom")
    config = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "x.Model"}}))
    with pytest.raises(LetheError, match=r"auto_map\); Lethe runs it only with trust_remote_code"):
        load_model(custom)
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(micro_run / "model" / name, bare / name)
    with pytest.raises(LetheError, match="has no tokenizer"):
        load_model(bare)


def test_a_resumed_run_counts_its_steps_from_the_first(micro_run, data_dir, tmp_path):
    """Results of a resumed run: tokens, seconds and history of the whole run, not only of the part after."""
    from lethe.config import ChunkConfig, TrainConfig
    from lethe.data.chunking import chunk_splits
    from lethe.data.splits import load_splits
    from lethe.engine import Trainer, objectives
    from lethe.models import load_model

    _, tokenizer = load_model(micro_run)
    chunks = chunk_splits(load_splits(data_dir, ["books/retain"]), tokenizer, ChunkConfig(length=64), 256)
    config = TrainConfig(lr=1e-3, max_steps=8, batch_size=4, checkpoint_every=2, log_every=1, eval_every=1)

    def trainer(folder, evaluator=lambda model: {}):
        model, _ = load_model(micro_run)
        return Trainer(model, objectives.get("lm")(), {"train": chunks["books/retain"]}, config,
                       pad_id=tokenizer.pad_token_id, checkpoint_dir=tmp_path / folder, evaluator=evaluator)

    straight = trainer("straight").fit()
    calls = []

    def interrupting(model):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        trainer("resumed", interrupting).fit()
    resumed = trainer("resumed").fit(resume=True)
    assert resumed.steps == straight.steps and resumed.tokens == straight.tokens
    assert [sorted(h) for h in resumed.history] == [sorted(h) for h in straight.history]
    values = lambda result: [h[k] for h in result.history for k in sorted(h)]  # noqa: E731
    assert values(resumed) == pytest.approx(values(straight), rel=1e-4)
    assert resumed.history[0]["step"] == 1 and resumed.seconds > 0


def test_run_files_share_one_file_mode(micro_run):
    umask = os.umask(0)
    os.umask(umask)
    modes = {name: (micro_run / name).stat().st_mode & 0o777 for name in
             ("results.json", "run.json", "env.json", "data_hashes.json", "members.json", "config.yaml")}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_resume_names_what_changed_and_takes_keys_lethe_gained_since(tmp_path):
    """A study started before the schema gained a key (with its default) resumes after an upgrade, where the exact
    comparison refused it and its advice (--config <the record>) failed the same way; a changed value is named."""
    from lethe.config import DataBuildConfig
    from lethe.errors import LetheError
    from lethe.runs import Run

    out = tmp_path / "run"
    config = DataBuildConfig(out=out / "data")
    Run.start(out, "data build", config).close("interrupted")
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    del recorded["max_doc_chars"]  # written by a Lethe whose schema did not have the key yet
    (out / "config.yaml").write_text(yaml.safe_dump(recorded))
    Run.start(out, "data build", config, resume=True).close("interrupted")

    changed = config.model_copy(update={"max_doc_chars": 800, "seed": 7})
    with pytest.raises(LetheError, match=r"\(seed: 0 → 7, max_doc_chars: 3000 → 800\); resume with --config"):
        Run.start(out, "data build", changed, resume=True)
