import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lethe.cli import main

DOMAINS = ("code", "science", "books")


def saved_perplexity(path: Path) -> float:
    """exp of the mean NLL over every token of a split, from its saved per-token log-probs alone."""
    return float(np.exp(-np.load(path)["logprob"].astype(np.float64).mean()))


def split_ids(data_dir: Path, name: str) -> list[str]:
    return [json.loads(line)["id"] for line in (data_dir / f"{name}.jsonl").read_text().splitlines()]


def test_micro_pretraining_memorises_its_members(micro_run, data_dir):
    results = json.loads((micro_run / "results.json").read_text())
    ppl = results["ppl"]
    for domain in DOMAINS:
        assert ppl[f"{domain}/forget"] < ppl[f"{domain}/approximate"], domain
        assert ppl[f"{domain}/retain"] < ppl[f"{domain}/approximate"], domain
    assert ppl["general/retain"] < ppl["general/eval"]
    # every split's perplexity is the one its saved per-token scores give
    assert sorted(ppl) == sorted([f"{d}/{s}" for d in DOMAINS for s in ("forget", "retain", "approximate")]
                                 + ["general/eval", "general/retain"])
    for name, value in ppl.items():
        assert value == pytest.approx(saved_perplexity(micro_run / "scores" / f"{name}.npz"), rel=1e-12), name
    # members.json names exactly the documents trained on, split by split
    members = json.loads((micro_run / "members.json").read_text())
    assert set(members) == {f"{d}/{s}" for d in DOMAINS for s in ("forget", "retain")} | {"general/retain"}
    for name, ids in members.items():
        assert ids == split_ids(data_dir, name), name
    hashes = json.loads((micro_run / "data_hashes.json").read_text())
    assert len(hashes) == len(ppl)
    for entry in hashes.values():
        assert entry["sha256"] == hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest()
    assert json.loads((micro_run / "run.json").read_text())["status"] == "done"


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
    at_pretraining = json.loads((micro_run / "results.json").read_text())["ppl"]
    for name in results["ppl"]:
        assert results["ppl"][name] == pytest.approx(at_pretraining[name], rel=1e-4)
        # per-sample rows rebuild the split's token-weighted perplexity and its chunk and token counts
        rows = [json.loads(line) for line in (out / "scores" / f"{name}.jsonl").read_text().splitlines()]
        tokens = sum(row["tokens"] for row in rows)
        assert len(rows) == results["splits"][name]["chunks"] and tokens == results["splits"][name]["tokens"]
        nll = sum(row["nll"] * row["tokens"] for row in rows) / tokens
        assert results["ppl"][name] == pytest.approx(np.exp(nll), rel=1e-6)
        assert all(row["ppl"] == pytest.approx(np.exp(row["nll"])) for row in rows)
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


def test_interrupted_pretraining_resumes_to_the_uninterrupted_run(data_dir, tmp_path):
    out = tmp_path / "run"
    settings = ["pretrain", "--preset", "micro", "--data", str(data_dir), "--set", "train.max_steps=60",
                "--set", "train.epochs=100", "--set", "train.checkpoint_every=5", "--set", "arch.vocab_size=512"]
    command = [sys.executable, "-m", "lethe.cli", *settings, "--out", str(out)]
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
    straight_run = subprocess.run([*command[:-1], str(tmp_path / "straight")], capture_output=True, text=True)
    assert straight_run.returncode == 0, straight_run.stderr[-2000:]
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert results["ppl"] == straight["ppl"] and results["train"]["history"] == straight["train"]["history"]
    assert (out / "model" / "model.safetensors").read_bytes() == (
        tmp_path / "straight" / "model" / "model.safetensors").read_bytes()
