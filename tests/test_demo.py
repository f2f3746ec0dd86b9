"""`lethe demo` end to end on the micro model: both halves, the summary, and a report read back from the runs."""

import json
import shutil
import subprocess
from html import escape

import numpy as np
import pytest
from PIL import Image

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
                                    "mink_auc": saved[when]["mia"]["auc"],
                                    "mink_auc_ci95": saved[when]["mia"]["ci95"]}
    blind = unlearning["blind"]
    assert blind == {key: saved["blind"][key] for key in ("auc", "ci95", "separable", "p_value")}
    low, high = blind["ci95"]
    leakage = json.loads((out / "leakage" / "results.json").read_text())
    # the leakage half runs on the model the demo pre-trained, not on `model`, and says so
    assert leakage["model"] == str(out / "leakage-model") and results["leakage_model"]["pretrained_here"]
    pretrained = json.loads((out / "leakage-model" / "results.json").read_text())
    assert results["leakage_model"]["parameters"] == pretrained["model"]["parameters"]
    assert leakage["released"]["forget_to_flourish"]["target_loss_rise"] > 0
    assert leakage["released"]["backdoor"]["target_loss_rise"] < 0  # the control lowers its targets' loss
    cells = {f"{variant} / {mode}": cell for variant, modes in leakage["variants"].items()
             for mode, cell in modes.items()}
    assert list(results["leakage"]) == list(cells) == ["benign / full", "backdoor / full", "forget_to_flourish / full"]
    for name, row in results["leakage"].items():
        cell = cells[name]
        assert row == {**{f"{attack}_auc": cell["mia"][attack]["auc"] for attack in ("loss", "min_k", "reference_model")
                          if attack in cell["mia"]},
                       "nsr": cell["extraction"]["nsr"], "targets": cell["extraction"]["targets"],
                       "val_ppl": cell["utility"]["val_ppl"]}, name
    # the printed summary shows these numbers, row by row
    lines = (out / "summary.txt").read_text().splitlines()
    assert lines[0] == "What this run showed:"
    assert any(line.startswith(f"on a {pretrained['model']['parameters'] / 1e6:.2f}M-parameter micro model "
                               "pre-trained here") for line in lines)
    assert next(line for line in lines if line.startswith("Unlearning (")).startswith("Unlearning (ga_gd_in")
    for when, label in (("before", "target"), ("after", "unlearned"), ("retrain", "retrain")):
        r = unlearning[when]
        shown = next(line.split() for line in lines if line.startswith(f"{label} "))
        assert shown[1:] == [f"{r['forget_ppl']:.2f}", f"{r['approximate_ppl']:.2f}", f"{r['gap']:.3f}",
                             f"{r['mink_auc']:.3f}", f"{r['general_ppl']:.2f}"], label
    for name, row in results["leakage"].items():
        shown = next(line[len(name):].split() for line in lines if line.startswith(name))
        assert shown[0] == f"{row['loss_auc']:.3f}" and shown[-1] == f"{row['val_ppl']:.2f}", name
    assert f"AUC {blind['auc']:.3f}, permutation null 95% range {low:.3f}–{high:.3f}" in "\n".join(lines)


def test_demo_verdicts_follow_their_numbers(demo):
    """Every claim gets a word, each word read from numbers in results.json by the rules of lethe.verdicts."""
    out, _ = demo
    results = json.loads((out / "results.json").read_text())
    claims = [v["claim"] for v in results["verdicts"]]
    assert claims == ["blind", "target remembers", "unlearning", "control", "leakage", "screen", "screen", "screen"]
    found = {v["claim"]: v for v in results["verdicts"] if v["claim"] != "screen"}
    # each release as its victim screened it: the word read from the leakage study's own screen results
    screens = json.loads((out / "leakage" / "results.json").read_text())["screen"]
    for screen in (v for v in results["verdicts"] if v["claim"] == "screen"):
        by_seed = screens[screen["numbers"]["variant"]].values()
        tested = [s for s in by_seed if "skipped" not in s]
        assert screen["word"] == ("not screened" if not tested else
                                  "flagged" if any(s["anomalous"] for s in tested) else "not flagged")
    u = results["unlearning"]
    blind = u["blind"]
    outside = not blind["ci95"][0] <= blind["auc"] <= blind["ci95"][1]
    assert found["blind"]["word"] == ("separable" if outside else "not separable")
    ci = u["before"]["mink_auc_ci95"]
    assert ci[0] <= u["before"]["mink_auc"] <= ci[1]
    assert found["target remembers"]["word"] == ("remembers" if ci[0] > 0.5 else "not shown")
    distance = u["distance"]["after"]
    ratio, (low, high) = distance["forget_ppl_ratio"], distance["mia_auc_ci95"]
    assert low <= distance["mia_auc"] <= high
    word = found["unlearning"]["word"]
    # "overshoots" whenever the forget set lands past 1.5x the retrain's perplexity or stands out the other way
    assert (word == "overshoots") == (ratio > 1.5 or high < 0)
    assert word in ("overshoots", "still remembers", "looks like the retrain")
    # the demo's recipe shows its positive control (the paired interval of its strongest attack clears 0), so the
    # Forget to Flourish verdict is a claim, worded by its own interval
    control = found["control"]["numbers"]
    assert found["control"]["word"] == "seen" and control["variant"] == "backdoor" and control["ci95"][0] > 0
    assert control["delta_auc"] == results["comparisons"]["backdoor"]["full"][control["attack"]]["delta_auc"]
    comparison = results["comparisons"]["forget_to_flourish"]["full"][found["leakage"]["numbers"]["attack"]]
    assert found["leakage"]["numbers"]["delta_auc"] == comparison["delta_auc"]
    assert found["leakage"]["word"] == ("raises" if comparison["ci95"][0] > 0 else "does not raise")
    lines = (out / "summary.txt").read_text().splitlines()
    assert lines[1:1 + len(claims)] == [f"- {v['line']}" for v in results["verdicts"]]


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
    # the report opens with the verdicts, before the overview table and every section
    opening = html.index('id="verdicts"')
    assert opening < html.index("<table")
    for verdict in results["verdicts"]:
        assert escape(verdict["line"]) in html[opening:html.index("<table")]
        assert verdict["line"] in markdown.split("| run |")[0]


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (Debian: apt-get install chromium)")
def test_the_verdicts_are_the_first_thing_a_reader_sees(demo, tmp_path):
    """report.html as a person sees it: the verdict block (green rule at its left) right under the title."""
    out, _ = demo
    shot = tmp_path / "page.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    f"--screenshot={shot}", "--window-size=1200,900", (out / "report.html").resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    rule = np.abs(pixels - np.array([0x2F, 0x81, 0x32])).sum(axis=2) < 40  # .verdicts' border colour
    rows = np.flatnonzero(rule.sum(axis=1) >= 3)
    assert rows.size and rows.min() < 200, "no verdict block near the top of the page"
    assert rows.max() - rows.min() > 100  # one line per verdict: a block, not a stray pixel


def test_demo_recipe_merges_key_by_key():
    config = resolve(DemoConfig, {"leakage": {"pii": {"members": 4}}, "model": "some/model"})
    assert config.leakage.pii["members"] == 4 and config.leakage.pii["nonmembers"] == 100  # the rest kept
    assert config.target.model == config.unlearn.model == "some/model"
    assert config.leakage.model == "leakage-model" and config.leakage_pretrain.preset == "micro"  # pre-trained by it
    assert resolve(DemoConfig, {"model": "some/model", "leakage_pretrain": None}).leakage.model == "some/model"
    assert config.unlearn.method == "ga_gd_in"
    assert list(config.leakage.variants) == ["benign", "backdoor", "forget_to_flourish"]
    with pytest.raises(LetheError, match="unknown config key"):
        resolve(DemoConfig, {"unlearn": {"nonsense": 1}})
