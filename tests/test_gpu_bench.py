"""bench/gpu.py at its CPU size: the GPU benchmark's pipeline, records and checks, without a GPU."""

import json

import pytest


@pytest.mark.slow
def test_the_gpu_benchmark_runs_at_its_small_size_on_a_cpu(tmp_path):
    from bench.gpu import main

    result = main(["--small", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "gpu.json").read_text())
    assert saved["device"] == "cpu" and saved["steps"] == 3
    assert [row["gradient_checkpointing"] for row in saved["rows"]] == [False, True]
    for row in saved["rows"]:
        assert row["parity"]["passed"], row["parity"]  # both sides train on the same batches from the same weights
        assert len(row["lethe"]["losses"]) == len(row["reference"]["losses"]) == 5
        for side in ("lethe", "reference"):
            assert row[side]["tokens_per_s"] > 0 and 0 < row[side]["mfu"] < 1
        assert row["ratio"] == pytest.approx(row["lethe"]["tokens_per_s"] / row["reference"]["tokens_per_s"])
    on, off = (saved["rows"][i]["lethe"]["memory"]["estimate_bytes"] for i in (1, 0))
    assert on < off  # the estimate knows what checkpointing saves
    smoke = saved["fsdp_smoke"]  # FSDP needs a GPU: refused here, with the reason
    assert not smoke["ran"] and "FSDP was asked for, but Accelerate enables it only on GPUs" in smoke["reason"]
    table = (tmp_path / "gpu.md").read_text()
    assert f"| small ({saved['rows'][0]['parameters'] / 1e6:.1f}M) | off | 2+2 x 32 |" in table
    assert "did not run (launched)" in table
    assert result["rows"] == saved["rows"]


@pytest.mark.slow
def test_the_smoke_test_scores_both_saved_models_where_the_launch_runs(tmp_path):
    """The FSDP smoke test's comparison, on a CPU through the DDP config (one process): what it does on a GPU."""
    from bench.gpu import ROOT, fsdp_smoke

    smoke = fsdp_smoke("small", tmp_path, "cpu", accelerate_config=ROOT / "configs" / "accelerate" / "ddp.yaml")
    assert smoke["ran"] and smoke["launched"]["steps"] == smoke["single"]["steps"] == 3
    assert smoke["launched"]["losses"] == smoke["single"]["losses"]
    losses, weights = smoke["held_out_loss"], smoke["weights"]
    assert smoke["same"] and abs(losses["launched"] - losses["single"]) <= 1e-3
    # the three steps moved the weights, alike in both runs
    assert weights["largest_change"] > 1e-3 and weights["largest_difference"] <= 1e-6
    assert losses["launched"] != losses["untrained"]
