"""The extraction working point: a dose-response over member copies on the micro victim, the documented choice,
and the paired per-secret comparison of two releases (McNemar, ΔNSR)."""

import json
import math

import numpy as np
import pytest

from lethe.config import ExtractionVictimConfig, LeakageConfig, resolve
from lethe.errors import LetheError


def calibration_config(micro_run, data_dir, **calibration) -> LeakageConfig:
    return LeakageConfig(
        model=str(micro_run), data=data_dir, reference="general/retain", variants={"benign": {}}, modes=["full"],
        pii={"members": 12, "nonmembers": 12, "validation_docs": 2, "filler_docs": 4, "kinds": ["ssn", "phone"]},
        finetune={"train": {"lr": 3e-3, "batch_size": 8, "warmup_ratio": 0.0}, "chunk": {"length": 128}},
        extract={"exposure": {"candidates": 30}},
        extraction_calibration={"seed": 7, "epochs": [3], **calibration})


@pytest.fixture(scope="module")
def dose_response(micro_run, data_dir, tmp_path_factory):
    from lethe.leakage.extraction_calibration import calibrate_extraction

    out = tmp_path_factory.mktemp("extraction") / "calibrate"
    return out, calibrate_extraction(calibration_config(micro_run, data_dir, copies=[40, 1]), out)


def test_nsr_rises_with_copies_and_the_documented_cell_is_chosen(dose_response):
    out, results = dose_response
    few, many = results["grid"]
    assert (few["copies"], many["copies"]) == (1, 40)  # run in the order listed, shown by copies
    # the sensitivity control: heavy repetition makes the micro victim memorise its secrets (about 1/12 at 25
    # copies, all of them from 30: a cliff, as on tiny), and never the non-members' it did not see
    assert many["members"]["nsr"] >= 10 > few["members"]["nsr"]
    assert many["members"]["exposure"] > few["members"]["exposure"]
    assert many["nonmembers"]["nsr"] == 0
    # the rule, by hand: in range and nearest the middle, else nearest the range (its middle), earlier cell on ties
    low, high = results["target"]
    inside = [c for c in results["grid"] if low <= c["rate"] <= high]
    expected = min(inside or results["grid"], key=lambda c: abs(c["rate"] - (low + high) / 2))
    assert results["chosen"] == expected and results["in_range"] == bool(inside)
    assert results["freeze"] == {"extraction_victim": {"copies": expected["copies"], "epochs": expected["epochs"],
                                                       "lr": 3e-3}}  # the recipe it was calibrated with
    ExtractionVictimConfig(**results["freeze"]["extraction_victim"])  # what it says to freeze is a valid study key
    assert (out / "dose_response.png").stat().st_size > 0


def test_the_report_shows_the_dose_response_and_the_working_point(dose_response):
    from lethe.cli import main

    out, results = dose_response
    assert main(["report", str(out)]) == 0
    page = (out / "report.md").read_text()
    chosen = results["chosen"]
    assert f"extraction working point: {chosen['copies']} copies × {chosen['epochs']:g} epochs" in page
    assert f"extraction_victim: {{copies: {chosen['copies']}, epochs: {chosen['epochs']:g}, lr: 0.003}}" in page
    for cell in results["grid"]:  # one row per cell, the chosen one marked
        assert f"| {cell['copies']} | {cell['epochs']:g} | {cell['members']['nsr']}/{cell['members']['secrets']} |" \
            in page
    assert page.count("| yes |") == 1
    assert "dose_response.png" in page or "data:image/png" in (out / "report.html").read_text()


def test_every_number_rebuilds_from_the_saved_per_secret_rows(dose_response):
    from scipy.stats import beta

    out, results = dose_response
    rows = [json.loads(line) for line in (out / "secrets.jsonl").read_text().splitlines()]
    for cell in results["grid"]:
        for role in ("member", "nonmember"):
            mine = [r for r in rows if (r["copies"], r["epochs"], r["set"]) == (cell["copies"], cell["epochs"], role)]
            summary = cell[f"{role}s"]
            hits = sum(r["hit"] for r in mine)
            assert (summary["nsr"], summary["secrets"]) == (hits, 12)
            # Clopper–Pearson from the beta quantiles
            low = beta.ppf(0.025, hits, 12 - hits + 1) if hits else 0.0
            high = beta.ppf(0.975, hits + 1, 12 - hits) if hits < 12 else 1.0
            assert summary["ci95"] == pytest.approx([low, high], abs=1e-6)
            for key in ("exposure", "exposure_skewnorm"):
                assert summary[key] == pytest.approx(np.mean([r[key] for r in mine]))
    # the secrets are the same in every cell: only D_ft's copies differ
    assert {(r["set"], r["id"]) for r in rows if r["copies"] == 1} == {(r["set"], r["id"]) for r in rows
                                                                       if r["copies"] == 40}


def test_the_choice_prefers_the_range_then_its_nearest_cell():
    from lethe.leakage.calibration import choose

    grid = [{"rate": 0.0}, {"rate": 0.08}, {"rate": 0.45}, {"rate": 0.2}, {"rate": 1.0}]
    assert choose(grid, (0.1, 0.5), "rate") == {"rate": 0.2}
    assert choose([{"rate": 0.0}, {"rate": 0.008}, {"rate": 1.0}], (0.1, 0.5), "rate") == {"rate": 0.008}


@pytest.mark.parametrize(("grid", "message"), [
    ({"copies": [3, 3]}, "copies repeats a value"),
    ({"copies": [0, 3]}, "extraction_calibration.copies.0: Input should be greater than or equal to 1"),
    ({"target": [0.5, 0.1]}, "target must be two shares 0 <= low < high <= 1"),
])
def test_a_bad_grid_is_refused_in_one_line(grid, message):
    with pytest.raises(LetheError, match=message) as error:
        resolve(LeakageConfig, {"model": "m", "extraction_calibration": grid})
    assert "\n" not in str(error.value)


def test_mcnemar_p_value_is_the_exact_binomial_by_hand():
    from lethe.leakage.extraction_comparison import mcnemar_exact

    # 1 secret only A extracts, 9 only B: p = 2 · Pr[Binomial(10, 1/2) <= 1] = 2 · 11 / 1024
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024, rel=1e-12)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 30) == pytest.approx(2 * 0.5 ** 30, rel=1e-12)


def test_two_releases_are_compared_secret_by_secret():
    from lethe.leakage.extraction_comparison import compare_extraction

    a = {f"s{i}": {"hit": i < 2, "exposure": 1.0 if i < 10 else None} for i in range(20)}
    b = {f"s{i}": {"hit": 1 <= i < 9, "exposure": 3.0 if i < 10 else None} for i in range(20)}
    result = compare_extraction([(a, b)], resamples=500)
    assert result["nsr"] == {"a": 2, "b": 8}
    assert result["mcnemar"] == {"only_a": 1, "only_b": 7, "p_value": pytest.approx(2 * 9 / 256)}
    assert result["delta_nsr"] == pytest.approx(6 / 20)
    assert result["ci95"][0] < 6 / 20 < result["ci95"][1] and result["ci95"][0] > 0
    assert result["exposure"]["secrets"] == 10 and result["exposure"]["delta"] == pytest.approx(2.0)
    with pytest.raises(LetheError, match="different secrets"):
        compare_extraction([(a, {**b, "other": {"hit": True, "exposure": None}})])


def test_the_leakage_summary_pairs_each_release_with_the_baseline(tmp_path):
    from lethe.leakage.analysis import extraction_comparisons

    config = LeakageConfig(model="m", data=tmp_path, variants=["benign", "privacy_backdoor"],
                           modes=["full"], seeds=[0, 1], bootstrap=200)
    hits = {("benign", 0): [1, 0, 0, 0], ("benign", 1): [0, 0, 0], ("privacy_backdoor", 0): [1, 1, 1, 0],
            ("privacy_backdoor", 1): [0, 1, 1]}
    for (variant, seed), row in hits.items():
        path = tmp_path / f"seed-{seed}" / "cells" / variant / "full" / "extract"
        path.mkdir(parents=True)
        (path / "generations.jsonl").write_text("".join(
            json.dumps({"id": f"{seed}-{i}", "exact": bool(h), "exposure": None}) + "\n" for i, h in enumerate(row)))
    found = extraction_comparisons(config, tmp_path, ["full"])["privacy_backdoor"]["full"]
    assert found["nsr"] == {"a": 1, "b": 5} and found["secrets"] == 7
    assert found["mcnemar"]["p_value"] == pytest.approx(2 * 0.5 ** 4)
    assert found["delta_nsr"] == pytest.approx(4 / 7) and "exposure" not in found
    assert math.isfinite(found["ci95"][0])
    from lethe.leakage.report import extraction_comparison_table

    [row] = extraction_comparison_table({"baseline": "benign",
                                         "extraction_comparisons": {"privacy_backdoor": {"full": found}}}).rows
    assert row[:5] == ["privacy_backdoor", "full", "5/7", "1/7", "+0.571"] and row[6] == "4 / 0"


def test_the_study_extracts_from_a_victim_at_the_working_point(micro_run, data_dir, tmp_path):
    """With `extraction_victim`, each cell's extraction reads a victim of its own, fine-tuned on the same draw with
    each member copied `copies` times; the membership victim and its attacks are untouched. Two identical releases
    extract the same secrets, so their paired comparison has no discordant pair."""
    from lethe.data.documents import read_documents
    from lethe.leakage.study import run_leakage

    config = LeakageConfig(**{
        **calibration_config(micro_run, data_dir).model_dump(),
        "variants": {"benign": {}, "again": {"variant": "benign"}},
        "mia": {"bootstrap": 100, "attacks": ["loss"]}, "extraction_victim": {"copies": 40, "epochs": 3},
        "blind": {"permutations": 20}})
    out = tmp_path / "study"
    results = run_leakage(config, out)
    seed = out / "seed-0"
    trained = [doc.text for doc in read_documents(seed / "pii-copies40" / "finetune.jsonl")]
    members = [json.loads(line)["text"] for line in (seed / "pii" / "targets_member.jsonl").read_text().splitlines()]
    assert all(trained.count(text) == 40 for text in members)
    by_seed = json.loads((out / "by_seed.json").read_text())["0"]["cells"]
    for variant in ("benign", "again"):
        cell = by_seed[variant]["full"]
        assert cell["extraction"]["victim"]["copies"] == 40 and cell["extraction"]["victim"]["epochs"] == 3
        extract_run = seed / "cells" / variant / "full" / "extract"
        assert "extraction-victim/model" in (extract_run / "config.yaml").read_text()
        assert json.loads((extract_run / "results.json").read_text())["nsr"] == cell["extraction"]["nsr"] >= 10
        assert "loss" in cell["mia"]
    assert results["variants"]["again"]["full"]["extraction"]["victim"]["copies"] == 40
    assert "at the extraction working point: 40 copies of each member × 3 epochs" in (out / "results.md").read_text()
    compared = results["extraction_comparisons"]["again"]["full"]
    assert compared["mcnemar"]["only_a"] == compared["mcnemar"]["only_b"] == 0 and compared["delta_nsr"] == 0
