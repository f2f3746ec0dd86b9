"""scripts/leakage_gpu.py end to end on a CPU at its small size: the GPU run's pipeline and results schema."""

import json

import pytest
import yaml


@pytest.mark.slow
def test_the_gpu_script_runs_the_whole_study_at_a_small_size(data_dir, tmp_path):
    from scripts.leakage_gpu import main

    results = main(["--data", str(data_dir), "--out", str(tmp_path / "gpu"), "--small"])
    saved = json.loads((tmp_path / "gpu" / "leakage" / "results.json").read_text())
    variants = ["benign", "backdoor", "ftf_stop", "ftf_project", "ftf_penalty", "ftf_in_distribution",
                "ftf_extraction"]
    assert list(saved["variants"]) == variants and saved["modes"] == ["full", "lora"]
    for variant in variants[1:]:
        for mode in ("full", "lora"):
            comparison = saved["comparisons"][variant][mode]["loss"]
            assert comparison["members"] == comparison["nonmembers"] == 16  # 8 a side, two seeds
            assert comparison["ci95"][0] <= comparison["delta_auc"] <= comparison["ci95"][1]
    assert saved["blind"]["ci95"][0] < saved["blind"]["ci95"][1]
    assert saved["released"]["ftf_penalty"]["target_loss_rise"] > 0
    assert results["comparisons"] == saved["comparisons"]
    timings = json.loads((tmp_path / "gpu" / "timings.json").read_text())
    assert timings["device"] == "cpu" and timings["total_s"] >= timings["study_s"] > 0 and timings["calibrate_s"] > 0
    calibration = json.loads((tmp_path / "gpu" / "calibrate" / "results.json").read_text())
    config = yaml.safe_load((tmp_path / "gpu" / "leakage" / "config.yaml").read_text())
    chosen = calibration["chosen"]  # the study runs the victim the calibration froze
    assert (config["finetune"]["train"]["lr"], config["finetune"]["train"]["epochs"]) == (chosen["lr"],
                                                                                          chosen["epochs"])


@pytest.mark.slow
def test_the_gpu_script_runs_the_strongest_attacker_with_an_extraction_working_point(data_dir, tmp_path):
    """configs/leakage/gpu-lira.yaml: the victim calibrated for LiRA, then the extraction working point, each frozen
    into the study, which reports the per-example attacks and extracts from a victim at that point."""
    from scripts.leakage_gpu import ROOT, main

    out = tmp_path / "gpu"
    main(["--data", str(data_dir), "--out", str(out), "--small", "--working-point",
          "--config", str(ROOT / "configs" / "leakage" / "gpu-lira.yaml")])
    victim = json.loads((out / "calibrate" / "results.json").read_text())
    working_point = json.loads((out / "calibrate-extraction" / "results.json").read_text())
    assert victim["attack"] == "lira_online" and [c["copies"] for c in working_point["grid"]] == [1, 12]
    config = yaml.safe_load((out / "leakage" / "config.yaml").read_text())
    assert config["extraction_victim"] == working_point["freeze"]["extraction_victim"]
    assert config["finetune"]["train"]["lr"] == victim["chosen"]["lr"] == config["extraction_victim"]["lr"]
    saved = json.loads((out / "leakage" / "results.json").read_text())
    for variant in ("backdoor", "ftf_project", "ftf_extraction"):
        assert {"lira_online", "lira_offline", "rmia"} <= set(saved["comparisons"][variant]["full"])
        assert saved["extraction_comparisons"][variant]["full"]["secrets"] == 8
    assert saved["variants"]["benign"]["full"]["extraction"]["victim"]["copies"] == working_point["chosen"]["copies"]
    timings = json.loads((out / "timings.json").read_text())
    assert timings["calibrate_extraction_s"] > 0
