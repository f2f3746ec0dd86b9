"""`lethe demo` end to end on the micro model: both halves, the summary, and a report read back from the runs."""

import json

import pytest

from lethe.cli import main
from lethe.config import DemoConfig, resolve
from lethe.errors import LetheError


@pytest.fixture(scope="module")
def demo(micro_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    code = main(["demo", "--out", str(out), "--set", f"model={micro_run}"])
    return out, code


def test_demo_runs_both_halves_and_summarises_them(demo):
    out, code = demo
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    unlearning = results["unlearning"]
    assert unlearning["method"] == "ga_gd_in" and unlearning["steps"] >= 1
    saved = json.loads((out / "unlearning" / "results.json").read_text())
    assert unlearning["after"]["forget_ppl"] == saved["after"]["ppl"]["forget"]
    assert saved["model"] == str(out / "target")  # unlearning starts from the known-member target
    target = json.loads((out / "target" / "results.json").read_text())
    assert target["target"]["splits"] == ["science/forget", "science/retain"]
    # the exact retrain: trained as the target was, without the forget set; the unlearned model is judged by it
    assert unlearning["retrain"]["forget_ppl"] > unlearning["before"]["forget_ppl"]
    for when in ("before", "after"):
        distance = unlearning["distance"][when]
        assert distance["forget_ppl_ratio"] == pytest.approx(
            unlearning[when]["forget_ppl"] / unlearning["retrain"]["forget_ppl"], rel=1e-6)
    blind = unlearning["blind"]
    assert blind["ci95"][0] < blind["ci95"][1] and set(unlearning["checks"]) == {"blind_inside_null",
                                                                                 "target_mink_above_null"}
    assert set(results["leakage"]) == {"benign / lora", "forget_to_flourish / lora"}
    leakage = json.loads((out / "leakage" / "results.json").read_text())
    cell = leakage["variants"]["forget_to_flourish"]["lora"]
    assert results["leakage"]["forget_to_flourish / lora"]["loss_auc"] == cell["mia"]["loss"]["auc"]
    assert leakage["released"]["forget_to_flourish"]["target_loss_rise"] > 0
    summary = (out / "summary.txt").read_text()
    assert "Unlearning (ga_gd_in" in summary and "forget_to_flourish / lora" in summary
    assert f"{unlearning['after']['mink_auc']:.3f}" in summary and "blind baseline" in summary


def test_demo_writes_a_report_of_its_runs(demo):
    out, _ = demo
    html = (out / "report.html").read_text()
    assert "<img" in html and "ga_gd_in" in html and "forget_to_flourish" in html
    assert (out / "report.md").is_file()


def test_demo_recipe_merges_key_by_key():
    config = resolve(DemoConfig, {"leakage": {"pii": {"members": 4}}, "model": "some/model"})
    assert config.leakage.pii["members"] == 4 and config.leakage.pii["nonmembers"] == 12  # the rest kept
    assert config.target.model == config.unlearn.model == config.leakage.model == "some/model"
    assert config.unlearn.method == "ga_gd_in" and list(config.leakage.variants) == ["benign", "forget_to_flourish"]
    with pytest.raises(LetheError, match="unknown config key"):
        resolve(DemoConfig, {"unlearn": {"nonsense": 1}})
