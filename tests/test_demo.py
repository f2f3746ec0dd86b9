"""`lethe demo` end to end on the micro model: both halves, the summary, and a report read back from the runs."""

import json

import numpy as np
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
    # the retrain row is the exact retrain's own saved scores
    retrain_forget = np.load(out / "target" / "scores" / "retrain-roles" / "science" / "forget.npz")["logprob"]
    assert unlearning["retrain"]["forget_ppl"] == pytest.approx(np.exp(-retrain_forget.astype(np.float64).mean()),
                                                                rel=1e-12)
    for when in ("before", "after"):
        assert unlearning[when] == {"forget_ppl": saved[when]["ppl"]["forget"],
                                    "approximate_ppl": saved[when]["ppl"]["approximate"],
                                    "general_ppl": saved[when]["ppl"]["general"],
                                    "gap": saved[when]["approx_gap"]["log_ppl_ratio"],
                                    "mink_auc": saved[when]["mia"]["auc"]}
    # the checks are read against the blind baseline's null range, as saved by the unlearning run
    blind = unlearning["blind"]
    assert blind == {key: saved["blind"][key] for key in ("auc", "ci95", "separable", "p_value")}
    low, high = blind["ci95"]
    assert unlearning["checks"] == {"blind_inside_null": low <= blind["auc"] <= high,
                                    "target_mink_above_null": unlearning["before"]["mink_auc"] > high}
    leakage = json.loads((out / "leakage" / "results.json").read_text())
    assert leakage["released"]["forget_to_flourish"]["target_loss_rise"] > 0
    cells = {f"{variant} / {mode}": cell for variant, modes in leakage["variants"].items()
             for mode, cell in modes.items()}
    assert list(results["leakage"]) == list(cells) == ["benign / lora", "forget_to_flourish / lora"]
    for name, row in results["leakage"].items():
        cell = cells[name]
        assert row == {**{f"{attack}_auc": cell["mia"][attack]["auc"] for attack in ("loss", "min_k", "reference_model")
                          if attack in cell["mia"]},
                       "nsr": cell["extraction"]["nsr"], "targets": cell["extraction"]["targets"],
                       "val_ppl": cell["utility"]["val_ppl"]}, name
    # the printed summary shows these numbers, row by row
    lines = (out / "summary.txt").read_text().splitlines()
    assert lines[0].startswith("Unlearning (ga_gd_in")
    for when, label in (("before", "target"), ("after", "unlearned"), ("retrain", "retrain")):
        r = unlearning[when]
        shown = next(line.split() for line in lines if line.startswith(f"{label} "))
        assert shown[1:] == [f"{r['forget_ppl']:.2f}", f"{r['approximate_ppl']:.2f}", f"{r['gap']:.3f}",
                             f"{r['mink_auc']:.3f}", f"{r['general_ppl']:.2f}"], label
    for name, row in results["leakage"].items():
        shown = next(line[len(name):].split() for line in lines if line.startswith(name))
        assert shown[0] == f"{row['loss_auc']:.3f}" and shown[-1] == f"{row['val_ppl']:.2f}", name
    assert f"AUC {blind['auc']:.3f}, permutation null 95% range {low:.3f}–{high:.3f}" in "\n".join(lines)


def test_demo_writes_a_report_of_its_runs(demo):
    out, _ = demo
    html, markdown = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert "<img" in html and "ga_gd_in" in html and "forget_to_flourish" in html
    # both renderings carry the runs' own numbers: the unlearned model's Min-K% AUC, each release's loss AUC
    results = json.loads((out / "results.json").read_text())
    shown = [f"{results['unlearning']['after']['mink_auc']:.3f}",
             *(f"{row['loss_auc']:.3f}" for row in results["leakage"].values())]
    for number in shown:
        assert number in markdown and number in html, number


def test_demo_recipe_merges_key_by_key():
    config = resolve(DemoConfig, {"leakage": {"pii": {"members": 4}}, "model": "some/model"})
    assert config.leakage.pii["members"] == 4 and config.leakage.pii["nonmembers"] == 12  # the rest kept
    assert config.target.model == config.unlearn.model == config.leakage.model == "some/model"
    assert config.unlearn.method == "ga_gd_in" and list(config.leakage.variants) == ["benign", "forget_to_flourish"]
    with pytest.raises(LetheError, match="unknown config key"):
        resolve(DemoConfig, {"unlearn": {"nonsense": 1}})
