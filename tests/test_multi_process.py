"""Commands under `accelerate launch` with two CPU processes: the training commands train data-parallel
and write one run directory; the others refuse to start."""

import json

import pytest

from lethe.cli import main
from lethe.models import load_model


def keys(tree) -> object:
    """The shape of a results tree: nested keys, without the numbers."""
    if isinstance(tree, dict):
        return {key: keys(value) for key, value in tree.items()}
    return type(tree).__name__


def test_unlearn_under_two_processes_writes_one_consistent_run(micro_run, data_dir, tmp_path, launch):
    common = ["unlearn", "--model", str(micro_run), "--data", str(data_dir), "--domain", "books", "--method",
              "ga_gd_in", "--set", "train.max_steps=3", "--set", "train.batch_size=4", "--set", "train.log_every=1"]
    done = launch(*common, "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("unlearned model saved to") == 1  # only the main process reports

    two = tmp_path / "two"
    assert json.loads((two / "run.json").read_text())["status"] == "done"
    results = json.loads((two / "results.json").read_text())
    assert results["train"]["steps"] == 3 and results["after"]["ppl"]["forget"] > results["before"]["ppl"]["forget"]
    log_lines = (two / "log.txt").read_text().splitlines()
    for step in (1, 2, 3):
        assert sum(f" step {step}: " in line for line in log_lines) == 1
    model, _ = load_model(two)
    saved = {name: tensor for name, tensor in model.state_dict().items()}
    original, _ = load_model(micro_run)
    assert any(not (saved[name] == tensor).all() for name, tensor in original.state_dict().items())
    assert not list(tmp_path.glob("two/.*.tmp"))

    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    assert keys(json.loads((tmp_path / "one" / "results.json").read_text())) == keys(results)

    again = launch(*common, "--out", str(two))  # every process must stop, not wait for the main one forever
    assert again.returncode != 0 and "--overwrite" in again.stderr
    assert json.loads((two / "results.json").read_text()) == results


def test_finetune_under_two_processes_trains_on_half_the_batches_each(micro_run, data_dir, tmp_path, launch):
    out = tmp_path / "ft"
    done = launch("finetune", "--model", str(micro_run), "--data-dir", str(data_dir), "--data", "books/approximate",
                  "--validation", "science/approximate", "--out", str(out), "--set", "train.epochs=1",
                  "--set", "train.batch_size=2")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    # each process takes every other chunk, so one epoch is half the single-process steps
    assert results["train"]["steps"] == -(-results["samples"]["data"] // 4)
    assert results["data_ppl"]["after"] < results["data_ppl"]["before"]
    assert (out / "scores" / "data" / "after.npz").is_file()
    load_model(out)


def test_poison_under_two_processes_stops_together_at_the_bound(micro_run, data_dir, tmp_path, launch):
    out = tmp_path / "poison"
    done = launch("poison", "--model", str(micro_run), "--targets", "books/approximate", "--reference", "general/eval",
                  "--data", str(data_dir), "--out", str(out), "--set", "chunk.length=64", "--set", "bound.epsilon=1.03",
                  "--set", "train.lr=5e-4", "--set", "train.max_steps=40", "--set", "train.batch_size=4",
                  "--set", "train.warmup_ratio=0", "--set", "train.scheduler=constant")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["train"]["stopped"] == "bound" and results["bound"]["crossed_at_step"] > 1
    # the released weights are those before the crossing step: within the bound
    assert results["loss"]["after"]["reference"] <= results["bound"]["limit"]
    assert results["loss"]["after"]["targets"] > results["loss"]["before"]["targets"]
    load_model(out)


def test_dp_sgd_under_two_processes_is_refused(micro_run, data_dir, tmp_path, launch):
    done = launch("finetune", "--model", str(micro_run), "--data-dir", str(data_dir), "--data", "books/approximate",
                  "--validation", "science/approximate", "--out", str(tmp_path / "dp"), "--set", "dp.epsilon=8")
    assert done.returncode != 0
    assert "lethe: error: DP-SGD is accounted for one batch group in one process" in done.stderr
    assert json.loads((tmp_path / "dp" / "run.json").read_text())["status"] == "failed"


@pytest.mark.parametrize(("name", "argv"), [
    ("eval ppl", ["eval", "ppl", "--model", "m", "--data", "d"]),
    ("attack extract", ["attack", "extract", "--model", "m", "--targets", "t.jsonl"]),
    ("experiment unlearning", ["experiment", "unlearning"]),
    ("sweep", ["sweep"]),
    ("demo", ["demo"]),
])
def test_commands_not_written_for_several_processes_refuse_them(name, argv, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets in each process it starts
    out = tmp_path / "run"
    assert main([*argv, "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (f"lethe: error: `lethe {name}` runs in one process, not 2: start it "
                                               "without `accelerate launch` (or with --num_processes 1)")
    assert not out.exists()
