"""The leakage experiment end to end on the micro model: released variants × fine-tuning modes."""

import json

import pytest

from lethe.config import LeakageConfig


def leakage_config(micro_run, data_dir, **extra) -> LeakageConfig:
    return LeakageConfig(
        model=str(micro_run), data=data_dir, reference="general/retain",
        pii={"members": 6, "nonmembers": 6, "repetitions": 2, "records_per_doc": 2, "prefix_chars": 100,
             "validation_docs": 2},
        poison={"train": {"lr": 3e-4, "epochs": 4, "batch_size": 4, "warmup_ratio": 0.0, "scheduler": "constant",
                          "log_every": 1}, "bound": {"epsilon": 1.1}, "chunk": {"length": 64}},
        finetune={"train": {"lr": 2e-3, "epochs": 3, "batch_size": 4}, "chunk": {"length": 64}},
        mia={"bootstrap": 50, "chunk": {"length": 64, "max_chunks_per_doc": 1}},
        extract={"decoding": {"strategies": ["greedy"]}, "exposure": {"enabled": False}}, **extra)


@pytest.fixture(scope="module")
def grid(micro_run, data_dir, tmp_path_factory):
    from lethe.leakage.study import run_leakage

    out = tmp_path_factory.mktemp("leakage") / "run"
    config = leakage_config(micro_run, data_dir, variants=["benign", "forget_to_flourish"], modes=["full", "dp"],
                            dp_epsilons=[8.0])
    return out, config, run_leakage(config, out)


def test_results_hold_every_documented_number(grid):
    out, _, results = grid
    saved = json.loads((out / "results.json").read_text())
    assert saved["variants"].keys() == {"benign", "forget_to_flourish"}
    for modes in saved["variants"].values():
        assert list(modes) == ["full", "dp_eps8"]
        for cell in modes.values():
            assert {"loss", "zlib", "min_k", "min_k_pp", "reference_model", "reference_data"} <= set(cell["mia"])
            assert {"auc", "tpr@1%fpr", "tpr@0.1%fpr"} <= set(cell["mia"]["loss"])
            assert {"nsr", "rate"} <= set(cell["extraction"]) and cell["utility"]["val_ppl"] > 1
        assert modes["dp_eps8"]["dp"]["epsilon"] <= 8.0
    for name in ("results.md", "roc_loss.png", "nsr.png", "utility.png"):
        assert (out / name).stat().st_size > 0
    released = saved["released"]["forget_to_flourish"]
    assert released["loss"]["after"]["targets"] > released["loss"]["before"]["targets"]
    assert released["loss"]["after"]["reference"] <= released["bound"]["limit"]


def test_resume_reads_finished_runs_back(grid):
    from lethe.leakage.study import run_leakage

    out, config, results = grid
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))  # as if stopped near the end
    finetuned = out / "cells" / "benign" / "full" / "finetune" / "model"
    stamp = max(p.stat().st_mtime_ns for p in finetuned.iterdir())
    again = run_leakage(config, out, resume=True)
    assert again["variants"] == json.loads(json.dumps(results["variants"]))
    assert max(p.stat().st_mtime_ns for p in finetuned.iterdir()) == stamp  # read back, not retrained


def test_targets_absent_from_the_fine_tuning_data_are_reported(grid, tmp_path, caplog):
    from lethe.leakage.study import warn_if_targets_absent

    out, _, _ = grid
    pii = tmp_path / "pii"
    pii.mkdir()
    for name in ("targets_member.jsonl", "validation.jsonl"):
        (pii / name).write_text((out / "pii" / name).read_text())
    (pii / "finetune.jsonl").write_text((out / "pii" / "validation.jsonl").read_text())
    with caplog.at_level("WARNING", logger="lethe"):
        warn_if_targets_absent(pii)
    assert "measure nothing" in caplog.text
