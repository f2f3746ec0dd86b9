"""The leakage experiment end to end on the micro model: releases × fine-tuning modes × seeds."""

import json

import numpy as np
import pytest

from lethe.config import LeakageConfig
from lethe.errors import LetheError

VARIANTS = {"benign": {}, "backdoor": {"variant": "privacy_backdoor"},
            "ftf_project": {"variant": "forget_to_flourish", "bound": {"on_cross": "project"}}}


def leakage_config(micro_run, data_dir, **extra) -> LeakageConfig:
    settings = dict(
        model=str(micro_run), data=data_dir, reference="general/retain",
        pii={"members": 10, "nonmembers": 10, "repetitions": 2, "validation_docs": 2, "filler_docs": 4},
        poison={"train": {"lr": 3e-4, "epochs": 4, "batch_size": 4, "warmup_ratio": 0.0, "scheduler": "constant",
                          "log_every": 1}, "bound": {"epsilon": 1.1}, "chunk": {"length": 64}},
        finetune={"train": {"lr": 2e-3, "epochs": 2, "batch_size": 4}, "chunk": {"length": 128}},
        mia={"bootstrap": 50, "attacks": ["loss", "min_k", "reference_model", "reference_data"]},
        extract={"decoding": {"strategies": ["greedy"]}, "exposure": {"enabled": False}},
        blind={"permutations": 20}, bootstrap=200)
    return LeakageConfig(**(settings | extra))


def test_each_mode_turns_into_its_cells_with_the_settings_it_changes(tmp_path):
    """Cells keep the names results.json and the sub-run directories have always had; dp's ε is the configured
    number itself, and dp fine-tunes dp_mode."""
    from typing import get_args

    from lethe.leakage.modes import victim_cells, victim_modes
    from lethe.leakage.study import Study

    assert victim_modes.names() == sorted(get_args(get_args(LeakageConfig.model_fields["modes"].annotation)[0]))
    config = LeakageConfig(model="m", modes=["head", "dp", "full"], dp_epsilons=[8.0, 0.5], dp_mode="lora",
                           finetune={"train": {"lr": 0.01}})
    cells = victim_cells(config)
    assert [cell.name for cell in cells] == ["head", "dp_eps8", "dp_eps0.5", "full"]
    assert [cell.epsilon for cell in cells] == [None, 8.0, 0.5, None]
    study = Study(config, tmp_path, seed=3, resume=False)
    head, private = study.finetune_config("benign", cells[0]), study.finetune_config("benign", cells[2])
    assert (head.mode, head.dp, head.train.lr, head.train.seed) == ("head", None, 0.01, 3)
    assert (private.mode, private.dp.epsilon, private.train.lr, private.train.seed) == ("lora", 0.5, 0.01, 3)
    assert private.model == str(tmp_path / "seed-3" / "released" / "benign" / "model")
    with pytest.raises(LetheError, match="unknown victim fine-tuning mode 'dp_eps8'"):
        victim_modes.get("dp_eps8")


@pytest.fixture(scope="module")
def grid(micro_run, data_dir, tmp_path_factory):
    from lethe.leakage.study import run_leakage

    out = tmp_path_factory.mktemp("leakage") / "run"
    config = leakage_config(micro_run, data_dir, variants=VARIANTS, modes=["full", "dp"], dp_epsilons=[8.0],
                            seeds=[0, 1])
    return out, config, run_leakage(config, out)


def test_results_hold_every_documented_number(grid):
    out, _, results = grid
    saved = json.loads((out / "results.json").read_text())
    assert saved["variants"].keys() == VARIANTS.keys() and saved["seeds"] == [0, 1]
    attacks = {"loss", "min_k", "reference_model", "reference_model_clean", "reference_data"}
    for modes in saved["variants"].values():
        assert list(modes) == ["full", "dp_eps8"]
        for cell in modes.values():
            assert set(cell["mia"]) == attacks
            assert cell["members"] == cell["nonmembers"] == 20  # 10 a side in each of two seeds
            assert cell["mia"]["loss"]["tpr@1%fpr"] is None  # too few records for a 1% FPR
            assert len(cell["mia"]["loss"]["auc_by_seed"]) == 2
            assert cell["extraction"]["targets"] == 20 and cell["utility"]["val_ppl"] > 1
        assert modes["dp_eps8"]["dp"]["epsilon"] <= 8.0
    for variant in ("backdoor", "ftf_project"):
        for mode in ("full", "dp_eps8"):
            for attack in attacks:
                c = saved["comparisons"][variant][mode][attack]
                assert c["ci95"][0] <= c["delta_auc"] <= c["ci95"][1] and c["members"] == 20
    assert "benign" not in saved["comparisons"]
    # the pooled blind baseline: the seeds' saved AUCs averaged, against the average of their permutation nulls
    by_seed = {seed: json.loads((out / f"seed-{seed}" / "blind.json").read_text()) for seed in (0, 1)}
    blind = saved["blind"]
    assert blind["auc"] == pytest.approx(np.mean([b["auc"] for b in by_seed.values()]), abs=1e-12)
    null = np.mean([b["null"] for b in by_seed.values()], axis=0)
    assert blind["ci95"] == pytest.approx(np.percentile(null, [2.5, 97.5]), abs=1e-12)
    verdict = not blind["ci95"][0] <= blind["auc"] <= blind["ci95"][1]  # outside the null, either way
    assert blind["separable"] is verdict  # a JSON boolean (it was once saved as the string "False")
    assert [b["auc"] for b in blind["by_seed"].values()] == [b["auc"] for b in by_seed.values()]
    table = (out / "results.md").read_text()
    for variant in ("backdoor", "ftf_project"):
        for mode in ("full", "dp_eps8"):
            delta = saved["comparisons"][variant][mode]["loss"]["delta_auc"]
            assert f"| {variant} | {mode} | loss | {delta:+.3f} |" in table
    plots = [(out / f"{name}.png").read_bytes() for name in ("comparisons", "mechanism", "nsr", "utility")]
    assert all(png.startswith(b"\x89PNG") for png in plots) and len(set(plots)) == len(plots)
    released = saved["released"]["ftf_project"]
    assert released["target_loss_rise"] > 0 and released["reference_ppl_after"] > released["reference_ppl_before"]
    assert saved["released"]["backdoor"]["target_loss_rise"] < 0  # the authors' direction: lowered
    # each release screened before fine-tuning; 10 calibration records are too few a held-out set, which it says
    assert saved["screen"].keys() == VARIANTS.keys()
    assert all("screening needs" in by_seed["skipped"] for v in saved["screen"].values() for by_seed in v.values())


def test_comparisons_are_paired_over_the_same_records(grid):
    """Rebuilt from the saved per-record scores alone: the delta is AUC(variant) − AUC(benign), seed by seed."""
    from sklearn.metrics import roc_auc_score

    from lethe.leakage.analysis import attack_scores

    out, _, results = grid
    deltas = []
    for seed in (0, 1):
        aucs = []
        for variant in ("backdoor", "benign"):
            scores = attack_scores(out / f"seed-{seed}" / "cells" / variant / "full" / "mia")["loss"]
            labels = [1] * len(scores["members"][1]) + [0] * len(scores["nonmembers"][1])
            aucs.append(roc_auc_score(labels, np.r_[scores["members"][1], scores["nonmembers"][1]]))
        deltas.append(aucs[0] - aucs[1])
    assert results["comparisons"]["backdoor"]["full"]["loss"]["delta_auc"] == pytest.approx(np.mean(deltas))


def test_mechanism_rows_hold_every_stage_of_every_record(grid):
    out, _, results = grid
    rows = [json.loads(line) for line in (out / "mechanism.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3 * 2 * 20  # seeds × variants × modes × records
    benign = [r for r in rows if r["variant"] == "benign"]
    assert all(r["clean"] == pytest.approx(r["release"], abs=1e-4) for r in benign)  # benign releases the clean model
    assert all(r["victim"] == r["baseline_victim"] for r in benign)
    m = results["mechanism"]["ftf_project"]["full"]
    assert m["push"]["members"] > 0 and m["push"]["nonmembers"] > 0  # the ascent pushed every target
    members = [r for r in rows if r["variant"] == "ftf_project" and r["mode"] == "full" and r["member"]]
    assert m["drop"]["members"] == pytest.approx(np.mean([r["release"] - r["victim"] for r in members]))


def test_resume_reads_finished_runs_back(grid):
    from lethe.leakage.study import run_leakage

    out, config, results = grid
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))  # as if stopped near the end
    finetuned = out / "seed-0" / "cells" / "benign" / "full" / "finetune" / "model"
    stamp = max(p.stat().st_mtime_ns for p in finetuned.iterdir())
    again = run_leakage(config, out, resume=True)
    assert again["comparisons"] == json.loads(json.dumps(results["comparisons"]))
    assert max(p.stat().st_mtime_ns for p in finetuned.iterdir()) == stamp  # read back, not retrained


def test_targets_longer_than_a_chunk_are_refused(grid, micro_run, data_dir, tmp_path):
    from lethe.leakage.study import run_leakage

    config = leakage_config(micro_run, data_dir, variants={"benign": {}}, modes=["full"],
                            finetune={"chunk": {"length": 16}})
    with pytest.raises(LetheError, match="would be split across chunks"):
        run_leakage(config, tmp_path / "short")


def test_a_baseline_missing_from_the_variants_is_refused_at_load(micro_run, data_dir):
    with pytest.raises(ValueError, match="baseline 'benign' is not one of the variants"):
        leakage_config(micro_run, data_dir, variants={"ftf": {"variant": "forget_to_flourish"}})


def test_calibration_chooses_the_victim_nearest_the_wanted_range(micro_run, data_dir, tmp_path):
    from sklearn.metrics import roc_auc_score

    from lethe.leakage.calibration import calibrate_victim, choose

    grid = [{"loss_auc": 0.55}, {"loss_auc": 0.93}, {"loss_auc": 0.78}, {"loss_auc": 0.66}]
    assert choose(grid, (0.6, 0.8)) == {"loss_auc": 0.66}
    assert choose([{"loss_auc": 0.5}, {"loss_auc": 0.95}], (0.6, 0.8)) == {"loss_auc": 0.5}
    config = leakage_config(micro_run, data_dir, variants={"benign": {}}, modes=["full"],
                            calibration={"seed": 7, "lr": [1e-4, 3e-3], "epochs": [1]})
    results = calibrate_victim(config, tmp_path / "calibrate")
    assert [(c["lr"], c["epochs"]) for c in results["grid"]] == [(1e-4, 1), (3e-3, 1)]
    assert results["grid"][1]["loss_auc"] > results["grid"][0]["loss_auc"]  # a stronger victim memorises more
    assert results["freeze"]["finetune"]["train"]["lr"] == results["chosen"]["lr"]
    # each grid cell's AUC is the loss attack's on its saved per-record scores
    for cell in results["grid"]:
        mia = tmp_path / "calibrate" / "seed-7" / "cells" / f"lr{cell['lr']:g}-epochs{cell['epochs']:g}" / "mia"
        rows = [json.loads(line) for line in (mia / "scores" / "attack_scores.jsonl").read_text().splitlines()]
        assert sum(row["member"] for row in rows) == len(rows) - sum(row["member"] for row in rows) == 10
        assert cell["loss_auc"] == pytest.approx(
            roc_auc_score([row["member"] for row in rows], [row["loss"] for row in rows]), abs=1e-12)


def test_the_positive_control_pulls_members_and_nonmembers_apart_on_three_seeds(micro_run, data_dir, tmp_path):
    """Wen et al.'s backdoor (lower the targets' loss before release): fine-tuning then refreshes the members
    while the non-members are forgotten, so after fine-tuning their losses lie further apart than from the
    benign release. Seeds 0, 1, 2 were fixed before the first run."""
    from lethe.leakage.study import run_leakage

    config = leakage_config(micro_run, data_dir, variants={"benign": {}, "backdoor": {"variant": "privacy_backdoor"}},
                            modes=["full"], seeds=[0, 1, 2], mia={"bootstrap": 50, "attacks": ["loss"]},
                            pii={"members": 16, "nonmembers": 16, "repetitions": 2, "validation_docs": 2,
                                 "filler_docs": 6})
    run_leakage(config, tmp_path / "control")
    rows = [json.loads(line) for line in (tmp_path / "control" / "mechanism.jsonl").read_text().splitlines()]
    for seed in (0, 1, 2):
        mine = [r for r in rows if r["seed"] == seed and r["variant"] == "backdoor"]
        gap = {victim: np.mean([r[victim] for r in mine if not r["member"]]) -
               np.mean([r[victim] for r in mine if r["member"]]) for victim in ("victim", "baseline_victim")}
        assert gap["victim"] > gap["baseline_victim"], (seed, gap)
