"""`train.log_with`: the engine's log records sent to Accelerate's trackers (TensorBoard where it is installed)."""

from __future__ import annotations

import json

import pytest

from lethe.cli import main

pytest.importorskip("tensorboard", reason="the tensorboard package (lethe-llm[tensorboard]) is not installed")


def scalars(logdir) -> dict[str, dict[int, float]]:
    """Every scalar of every event file under `logdir`, as TensorBoard itself reads them: {tag: {step: value}}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, dict[int, float]] = {}
    for events in sorted(logdir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, {}).update({event.step: event.value for event in accumulator.Scalars(tag)})
    return found


def test_tensorboard_receives_the_runs_logged_losses_and_evaluations(micro_run, data_dir, tmp_path):
    out = tmp_path / "unlearn"
    assert main(["unlearn", "--model", str(micro_run), "--data", str(data_dir), "--domain", "books", "--method", "ga",
                 "--out", str(out), "--set", "train.max_steps=4", "--set", "train.log_every=1",
                 "--set", "train.eval_every=2", "--set", "train.log_with=[tensorboard]"]) == 0
    history = json.loads((out / "results.json").read_text())["train"]["history"]
    logged: dict[str, dict[int, float]] = {}
    for record in history:
        for key, value in record.items():
            if key != "step":
                logged.setdefault(key, {})[record["step"]] = value
    assert {"loss", "lr", "grad_norm", "eval/log_ppl_ratio_before"} <= set(logged)
    written = scalars(out / "trackers")
    assert set(written) == set(logged)
    for tag, values in logged.items():
        assert written[tag] == pytest.approx(values, rel=1e-6), tag


def test_a_tracker_without_its_package_is_refused_with_the_config(tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else find_spec(name, *a))
    assert main(["unlearn", "--model", str(tmp_path / "absent"), "--data", str(tmp_path),
                 "--out", str(tmp_path / "out"), "--set", "train.log_with=[tensorboard, mlflow]"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "train.log_with" in error and "pip install 'lethe-llm[mlflow]'" in error
    assert not (tmp_path / "out").exists()
