import json
import signal
import subprocess
import sys
import time

import pytest

from lethe.cli import main

DOMAINS = ("code", "science", "books")


def test_micro_pretraining_memorises_its_members(micro_run):
    results = json.loads((micro_run / "results.json").read_text())
    ppl = results["ppl"]
    for domain in DOMAINS:
        assert ppl[f"{domain}/forget"] < ppl[f"{domain}/approximate"], domain
        assert ppl[f"{domain}/retain"] < ppl[f"{domain}/approximate"], domain
    assert ppl["general/retain"] < ppl["general/eval"]
    members = json.loads((micro_run / "members.json").read_text())
    assert set(members) == {f"{d}/{s}" for d in DOMAINS for s in ("forget", "retain")} | {"general/retain"}
    for name in ("run.json", "config.yaml", "env.json", "data_hashes.json", "log.txt", "model/model.safetensors"):
        assert (micro_run / name).is_file(), name
    assert (micro_run / "scores" / "code" / "approximate.npz").is_file()


def test_cli_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("assets", "data", "pretrain", "eval", "demo"):
        assert command in out


def test_eval_ppl_writes_results_and_per_sample_scores(micro_run, data_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "ppl", "--model", str(micro_run), "--data", str(data_dir), "--out", str(out),
                 "--splits", "code/forget,code/approximate"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["ppl"]) == {"code/forget", "code/approximate"}
    at_pretraining = json.loads((micro_run / "results.json").read_text())["ppl"]["code/forget"]
    assert results["ppl"]["code/forget"] == pytest.approx(at_pretraining, rel=1e-4)
    rows = (out / "scores" / "code" / "forget.jsonl").read_text().splitlines()
    assert len(rows) == results["splits"]["code/forget"]["chunks"]
    assert "perplexity" in capsys.readouterr().out
    # a second run into the same directory is refused and the first one's results survive
    before = (out / "results.json").read_text()
    assert main(["eval", "ppl", "--model", str(micro_run), "--data", str(data_dir), "--out", str(out)]) == 2
    assert "already holds" in capsys.readouterr().err
    assert (out / "results.json").read_text() == before


@pytest.mark.parametrize("args, message", [
    (["--set", "chunk.lenght=64"], "unknown config key 'chunk.lenght'"),
    (["--set", "chunk.length=4096"], "longer than the model's context"),
    (["--data", "/no/such/dir"], "does not exist"),
])
def test_bad_eval_input_is_one_line(micro_run, data_dir, tmp_path, capsys, args, message):
    base = ["eval", "ppl", "--model", str(micro_run), "--data", str(data_dir), "--out", str(tmp_path / "r")]
    assert main(base + args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("lethe: error: ") and message in lines[-1]
    assert not any("Traceback" in line for line in lines)


def test_interrupted_pretraining_resumes(data_dir, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "lethe.cli", "pretrain", "--preset", "micro", "--data", str(data_dir),
               "--out", str(out), "--set", "train.max_steps=60", "--set", "train.epochs=100",
               "--set", "train.checkpoint_every=5", "--set", "arch.vocab_size=512"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((out / "checkpoints").glob("step-*/trainer_state.json")) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # as a scheduler pre-empting the job would
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["train"]["steps"] == 60 and "resumed from" in (out / "log.txt").read_text()
