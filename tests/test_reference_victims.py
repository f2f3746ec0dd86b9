"""Reference victims in the leakage study: balanced halves, the victim's recipe, LiRA/RMIA rebuilt from saved files."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import yaml

from lethe.attacks.per_example import lira_offline_score, lira_online_score
from lethe.config import LeakageConfig
from lethe.data.documents import read_documents
from lethe.errors import LetheError

PER_EXAMPLE = ("lira_online", "lira_offline", "rmia")
# the study below fine-tunes 10 micro models (2 releases × a victim and 4 references): about a minute alone,
# several on a loaded machine
slow = pytest.mark.slow


def reference_config(micro_run, data_dir, **extra) -> LeakageConfig:
    settings = dict(
        model=str(micro_run), data=data_dir, reference="general/retain", modes=["full"], seeds=[0], references=4,
        variants={"benign": {}, "backdoor": {"variant": "privacy_backdoor"}},
        pii={"members": 10, "nonmembers": 10, "calibration": 10, "repetitions": 2, "validation_docs": 2,
             "filler_docs": 4},
        poison={"train": {"lr": 3e-4, "epochs": 1, "batch_size": 4, "warmup_ratio": 0.0, "scheduler": "constant"},
                "bound": {"epsilon": 1.1}, "chunk": {"length": 64}},
        finetune={"train": {"lr": 2e-3, "epochs": 2, "batch_size": 4}, "chunk": {"length": 128}},
        mia={"bootstrap": 50, "attacks": ["loss", *PER_EXAMPLE]},
        extract={"decoding": {"strategies": ["greedy"]}, "exposure": {"enabled": False}},
        blind={"permutations": 20}, bootstrap=200, tpr_min_records=10)
    return LeakageConfig(**(settings | extra))


@pytest.fixture(scope="module")
def study(micro_run, data_dir, tmp_path_factory):
    from lethe.leakage.study import run_leakage

    out = tmp_path_factory.mktemp("references") / "run"
    config = reference_config(micro_run, data_dir, jobs=2)  # two processes: the parallel path
    lethe_log = logging.getLogger("lethe")
    level = lethe_log.level
    lethe_log.setLevel(logging.DEBUG)  # as the command line does: the run's log.txt keeps every record
    try:
        return out, config, run_leakage(config, out)
    finally:
        lethe_log.setLevel(level)


@slow
def test_every_record_sits_in_exactly_half_the_references_and_their_data_says_so(study):
    out, config, _ = study
    root = out / "seed-0"
    keep = json.loads((root / "references" / "keep.json").read_text())
    matrix = np.array(keep["keep"])
    assert matrix.shape == (4, 30) and (matrix.sum(0) == 2).all()  # 10 + 10 targets and 10 calibration records
    targets = {json.loads(line)["id"]: json.loads(line)["text"]
               for name in ("targets_all", "calibration")
               for line in (root / "pii" / f"{name}.jsonl").read_text().splitlines()}
    members = {json.loads(line)["id"] for line in (root / "pii" / "targets_member.jsonl").read_text().splitlines()}
    victim_filler = sorted(d.text for d in read_documents(root / "pii" / "finetune.jsonl")
                           if d.id.split("~")[0] not in members)
    for k in range(4):
        documents = read_documents(root / "references" / f"ref-{k}.jsonl")
        copies = [d for d in documents if d.id.split("~")[0] in targets]
        kept = [record for record, seen in zip(keep["records"], matrix[k], strict=True) if seen]
        assert sorted(d.id.split("~")[0] for d in copies) == sorted(kept * 2)  # `repetitions` copies of each
        assert all(d.text == targets[d.id.split("~")[0]] for d in copies)
        assert sorted(d.text for d in documents if d not in copies) == victim_filler


@slow
def test_each_reference_victim_follows_the_cells_recipe_with_its_own_data_and_seed(study):
    out, _, _ = study
    cell = out / "seed-0" / "cells" / "backdoor" / "full"
    victim = yaml.safe_load((cell / "finetune" / "config.yaml").read_text())
    seeds = set()
    for k in range(4):
        reference = yaml.safe_load((cell / "references" / f"ref-{k}" / "config.yaml").read_text())
        assert reference["data"].endswith(f"references/ref-{k}.jsonl")
        seeds.add(reference["train"].pop("seed"))
        assert {**reference, "data": None, "train": None} == {**victim, "data": None, "train": None}
        assert reference["train"] == {k: v for k, v in victim["train"].items() if k != "seed"}
    assert len(seeds) == 4 and victim["train"]["seed"] not in seeds
    assert reference["model"].endswith("released/backdoor/model")


@slow
def test_study_reports_the_per_example_attacks_with_paired_comparisons(study):
    out, _, results = study
    saved = json.loads((out / "results.json").read_text())
    for variant in ("benign", "backdoor"):
        assert set(saved["variants"][variant]["full"]["mia"]) == {"loss", *PER_EXAMPLE}
    for attack in PER_EXAMPLE:
        comparison = saved["comparisons"]["backdoor"]["full"][attack]
        assert comparison["ci95"][0] <= comparison["delta_auc"] <= comparison["ci95"][1]
        low_fpr = comparison["tpr@1%fpr"]  # the paired difference at low FPR (10 non-members: zero false positives)
        tprs = [saved["variants"][variant]["full"]["mia"][attack]["tpr@1%fpr"] for variant in ("backdoor", "benign")]
        assert low_fpr["delta"] == pytest.approx(tprs[0] - tprs[1]) and low_fpr["ci95"][0] <= low_fpr["ci95"][1]
    assert "tpr@1%fpr" not in saved["comparisons"]["backdoor"]["full"]["loss"]
    for attack in PER_EXAMPLE:
        metrics = json.loads((out / "seed-0" / "cells" / "benign" / "full" / "mia" / "results.json").read_text())
        assert {"auc", "tpr@0.1%fpr", "tpr@1%fpr", "ci95"} <= set(metrics["attacks"][attack])
    assert "TPR at 0.1% FPR is the TPR at zero false positives" in metrics["per_example"]["note"]
    header = next(line for line in (out / "results.md").read_text().splitlines() if line.startswith("| variant | mode"))
    assert all(f"{attack} AUC" in header for attack in PER_EXAMPLE)  # beside the population attacks in the table


@slow
def test_per_example_scores_rebuild_from_the_saved_parameters(study):
    out, _, _ = study
    mia = out / "seed-0" / "cells" / "benign" / "full" / "mia"
    saved = json.loads((mia / "scores" / "per_example.json").read_text())
    rows = [json.loads(line) for line in (mia / "scores" / "attack_scores.jsonl").read_text().splitlines()]
    population = saved["population"]
    assert len(population["target"]) == 10 and np.array(population["keep"]).sum(0).tolist() == [2] * 10
    # each model's offset: its mean score on the population records it never trained on
    unseen = ~np.array(population["keep"])
    assert saved["offsets"]["target"] == pytest.approx(np.mean(population["target"]))
    assert saved["offsets"]["references"] == pytest.approx(
        [np.array(population["references"])[k][unseen[k]].mean() for k in range(len(unseen))])
    for role, entry in saved["sets"].items():
        mine = [r for r in rows if r["set"] == role]
        raw_target, raw_references, keep = (np.array(entry[k]) for k in ("target", "references", "keep"))
        assert raw_target == pytest.approx([r["loss"] for r in mine])
        target = raw_target - saved["offsets"]["target"]
        references = raw_references - np.array(saved["offsets"]["references"])[:, None]
        assert keep.sum(0).tolist() == [2] * len(target)
        online = entry["lira_online"]
        assert online["mu_in"] == pytest.approx((references * keep).sum(0) / 2)  # the mean of the two IN references
        rebuilt = lira_online_score(target, *(np.array(online[k]) for k in ("mu_in", "sigma_in", "mu_out",
                                                                              "sigma_out")))
        assert rebuilt == pytest.approx([r["lira_online"] for r in mine])
        offline = entry["lira_offline"]
        assert lira_offline_score(target, np.array(offline["mu_out"]), np.array(offline["sigma_out"])) == \
            pytest.approx([r["lira_offline"] for r in mine])
        # RMIA: the share of population samples whose log ratio lies at or below the record's (γ = 1)
        counts = [np.mean(np.array(population["log_ratio"]) <= x) for x in entry["rmia"]["log_ratio"]]
        assert counts == pytest.approx([r["rmia"] for r in mine])


@slow
def test_resume_with_other_jobs_reads_every_run_back(study):
    from lethe.leakage.study import run_leakage

    out, config, results = study
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    reference = out / "seed-0" / "cells" / "benign" / "full" / "references" / "ref-3" / "model"
    stamp = max(p.stat().st_mtime_ns for p in reference.iterdir())
    again = run_leakage(config.model_copy(update={"jobs": 1}), out, resume=True)  # jobs is not part of the config
    assert again["comparisons"] == json.loads(json.dumps(results["comparisons"]))
    assert max(p.stat().st_mtime_ns for p in reference.iterdir()) == stamp


def test_reference_counts_that_cannot_fit_a_variance_are_refused_at_load(micro_run, data_dir):
    for count in (2, 3):
        with pytest.raises(ValueError, match="even number of at least 4"):
            reference_config(micro_run, data_dir, references=count)


def test_a_manifest_missing_a_record_is_refused(tmp_path):
    from lethe.attacks.reference_victims import keep_of, read_manifest, write_manifest

    write_manifest(tmp_path / "references.json", ["a/model", "b/model"], ["r1", "r2"], np.array([[1, 0], [0, 1]], bool))
    models, keep = read_manifest(tmp_path / "references.json")
    assert models == [str(tmp_path / "a" / "model"), str(tmp_path / "b" / "model")]
    assert keep_of(["r2", "r1"], keep).tolist() == [[False, True], [True, False]]
    with pytest.raises(LetheError, match="not in the reference victims' manifest"):
        keep_of(["r3"], keep)


@slow
def test_lira_beats_the_loss_attack_at_low_fpr_on_planted_members(micro_run, data_dir, tmp_path):
    """Members planted 8 times each in the victim's data; 100 non-members, so 1% FPR is one false positive. The
    loss attack's one threshold mixes easy and hard records; LiRA compares each record with itself."""
    from lethe.leakage.study import run_leakage

    config = reference_config(micro_run, data_dir, variants={"benign": {}}, reference_clean=False,
                              pii={"members": 40, "nonmembers": 100, "calibration": 12, "repetitions": 8,
                                   "validation_docs": 2, "filler_docs": 4},
                              finetune={"train": {"lr": 2e-3, "epochs": 1, "batch_size": 8}, "chunk": {"length": 128}},
                              mia={"bootstrap": 0, "attacks": ["loss", "lira_online", "lira_offline"]})
    run_leakage(config, tmp_path / "planted")
    attacks = json.loads((tmp_path / "planted" / "seed-0" / "cells" / "benign" / "full" / "mia" /
                          "results.json").read_text())["attacks"]
    loss = attacks["loss"]["tpr@1%fpr"]
    assert attacks["lira_online"]["tpr@1%fpr"] > loss + 0.05  # measured: loss 0.15, online 0.275, offline 0.575
    assert attacks["lira_offline"]["tpr@1%fpr"] > loss + 0.05


def test_calibration_reads_the_metric_it_is_told_and_prints_it():
    """With 64 non-members (SmolLM2's study) TPR at 1% FPR is the TPR at no false positive: LiRA's AUC is chosen on."""
    from lethe.config import CalibrationConfig
    from lethe.leakage.calibration import calibrated_metric, choose, format_calibration

    assert calibrated_metric(CalibrationConfig()) == ("loss_auc", "auc")
    assert calibrated_metric(CalibrationConfig(attack="lira_online")) == ("lira_online_tpr@1%fpr", "tpr@1%fpr")
    by_auc = CalibrationConfig(attack="lira_online", metric="auc", target=(0.7, 0.9))
    key, _ = calibrated_metric(by_auc)
    grid = [{"lr": 3e-5, "epochs": 1, "loss_auc": 0.61, "lira_online_auc": 0.83, "lira_online_tpr@1%fpr": 0.0,
             "val_ppl": 25.1},
            {"lr": 1e-4, "epochs": 1, "loss_auc": 0.72, "lira_online_auc": 0.97, "lira_online_tpr@1%fpr": 0.6,
             "val_ppl": 25.9}]
    chosen = choose(grid, by_auc.target, key)
    assert chosen["lr"] == 3e-5  # by TPR it would be the other cell
    text = format_calibration({"seed": 100, "mode": "full", "baseline": "benign", "attack": "lira_online",
                               "key": key, "target": [0.7, 0.9], "grid": grid, "chosen": chosen, "in_range": True,
                               "freeze": {"finetune": {"train": {"lr": 3e-5, "epochs": 1}}}})
    assert "wanted lira_online AUC 0.7–0.9" in text
    assert [line for line in text.splitlines() if "<- chosen" in line] == [
        next(line for line in text.splitlines() if line.split()[:1] == ["3e-05"])]
    assert "0.830" in text and "lr: 3e-05, epochs: 1" in text


@slow
def test_calibration_for_lira_chooses_by_its_tpr_at_one_percent_fpr(micro_run, data_dir, tmp_path):
    from lethe.leakage.calibration import calibrate_victim

    config = reference_config(micro_run, data_dir, variants={"benign": {}}, reference_clean=False,
                              calibration={"seed": 7, "lr": [1e-4, 3e-3], "epochs": [1], "attack": "lira_online",
                                           "target": [0.05, 0.5]})
    results = calibrate_victim(config, tmp_path / "calibrate")
    key = "lira_online_tpr@1%fpr"
    assert results["key"] == key and results["chosen"][key] == min(
        results["grid"], key=lambda c: (not 0.05 <= c[key] <= 0.5, abs(c[key] - 0.275)))[key]
    for cell in results["grid"]:
        path = tmp_path / "calibrate" / "seed-7" / "cells" / f"lr{cell['lr']:g}-epochs{cell['epochs']:g}"
        mia = json.loads((path / "mia" / "results.json").read_text())
        assert cell[key] == mia["attacks"]["lira_online"]["tpr@1%fpr"]
        reference = yaml.safe_load((path / "references" / "ref-0" / "config.yaml").read_text())
        assert reference["train"]["lr"] == cell["lr"]  # the references follow the grid cell's recipe


@slow
def test_attack_mia_cli_with_reference_victims_matches_the_studys_cell(study, tmp_path):
    from lethe.cli import main

    out, _, _ = study
    cell = out / "seed-0" / "cells" / "benign" / "full"
    pii = out / "seed-0" / "pii"
    code = main(["attack", "mia", "--model", str(cell / "finetune" / "model"),
                 "--members", str(pii / "targets_member.jsonl"), "--nonmembers", str(pii / "targets_nonmember.jsonl"),
                 "--calibration", str(pii / "calibration.jsonl"),
                 "--reference-victims", str(cell / "references" / "references.json"), "--out", str(tmp_path / "mia"),
                 "--set", "bootstrap=50", "--set", "blind=null", "--set", "attacks=[lira_online,lira_offline,rmia]"])
    assert code == 0
    mine = json.loads((tmp_path / "mia" / "results.json").read_text())["attacks"]
    theirs = json.loads((cell / "mia" / "results.json").read_text())["attacks"]
    for attack in PER_EXAMPLE:
        assert mine[attack]["auc"] == pytest.approx(theirs[attack]["auc"], abs=1e-12)
    missing = main(["attack", "mia", "--model", str(cell / "finetune" / "model"),
                    "--members", str(pii / "targets_member.jsonl"),
                    "--nonmembers", str(pii / "targets_nonmember.jsonl"),
                    "--out", str(tmp_path / "refused"), "--set", "attacks=[lira_online]"])
    assert missing != 0  # lira_online without reference victims: refused in one line


@slow
def test_the_studys_log_counts_every_finished_fine_tune_by_name(study):
    out, _, _ = study
    lines = (out / "log.txt").read_text().splitlines()
    # the first run's lines (a test above resumes the same study, and appends its own)
    finished = [line.split("fine-tunes: ", 1)[1] for line in lines if "fine-tunes: " in line][:10]
    # two releases, each fine-tuned into a victim and 4 reference victims, in two processes
    assert [line.split(" done")[0] for line in finished] == [f"{k} of 10" for k in range(1, 11)]
    assert sum("(seed 0, backdoor × full, reference 3," in line for line in finished) == 1
