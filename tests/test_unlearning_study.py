"""The whole unlearning study and the robustness sweep, on the micro model."""

import json
from pathlib import Path

import numpy as np
import pytest

from lethe.cli import main
from lethe.config import UnlearningStudyConfig, read_yaml
from lethe.unlearning.study import _mean_tree, run_experiment, run_sweep

SETTINGS = {"train": {"lr": 3e-3, "epochs": 2, "batch_size": 8, "warmup_ratio": 0}}
METHODS = ["ga_gd_in", "npo", "ga"]
OVERRIDES = {"npo": {"train": {"lr": 1e-3}, "method_args": {"npo_beta": 0.2}}}  # npo at its own recipe
# where each role's per-token scores sit under a model's scores directory, for domain "books"
ROLE_SCORES = {"forget": "books/forget.npz", "retain": "books/retain.npz", "approximate": "books/approximate.npz",
               "general": "general/eval.npz"}


def saved_perplexity(path: Path) -> float:
    """exp of the mean NLL over every token of a split, from its saved per-token log-probs alone."""
    return float(np.exp(-np.load(path)["logprob"].astype(np.float64).mean()))


@pytest.fixture(scope="module")
def experiment(micro_run, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "experiment"
    config = UnlearningStudyConfig(model=str(micro_run), data=data_dir, domains=["books"],
                                   methods=METHODS, unlearn=SETTINGS, method_overrides=OVERRIDES, retrain=True)
    return out, config, run_experiment(config, out)


def test_experiment_results_are_the_numbers_of_its_saved_scores_and_cells(experiment):
    out, _, results = experiment
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    score_dirs = {"original": out / "original" / "books", "retrained": out / "retrain" / "books" / "unlearning_scores",
                  **{method: out / "runs" / "books" / method / "scores" / "unlearned" for method in METHODS}}
    for name, scores in score_dirs.items():
        assert results[name]["ppl"] == {role: pytest.approx(saved_perplexity(scores / file), rel=1e-12)
                                        for role, file in ROLE_SCORES.items()}, name
        mia = results[name]["mia"]
        assert mia["auc_folded"] == max(mia["auc"], 1 - mia["auc"])
    retrained = results["retrained"]
    for method in METHODS:
        row, cell = results[method], json.loads((out / "runs" / "books" / method / "results.json").read_text())
        # the study's row for one domain is that cell's model after unlearning, not before
        assert row["ppl"] == cell["after"]["ppl"] and row["approx_gap"] == cell["after"]["approx_gap"]
        assert row["mia"]["auc"] == cell["after"]["mia"]["auc"] != cell["before"]["mia"]["auc"]
        assert row["cost"]["flops"] == cell["cost"]["flops"] > 0
        assert row["cost"]["seconds"] == cell["cost"]["seconds"]
        distance = row["retrain_distance"]
        assert distance["forget_ppl_ratio"] == pytest.approx(row["ppl"]["forget"] / retrained["ppl"]["forget"])
        assert distance["mia_auc"] == pytest.approx(row["mia"]["auc"] - retrained["mia"]["auc"])
    # a row is marked where the model collapsed (forget or retain perplexity over 10× the original's)
    shown = "| ga_gd_in (collapsed) |" if results["ga_gd_in"].get("collapsed") else "| ga_gd_in |"
    assert shown in (out / "results.md").read_text() and (out / "methods.png").stat().st_size > 10_000


def test_a_one_domain_study_keeps_its_intervals_at_the_top(experiment):
    _, _, results = experiment
    for name in METHODS:  # nothing to average over one domain: the row is the domain's, intervals included
        assert results[name] == results["by_domain"]["books"][name]
        assert len(results[name]["retrain_distance"]["forget_ppl_ratio_ci95"]) == 2


def test_several_domains_average_their_numbers_and_drop_what_cannot_be_averaged():
    code = {"ga": {"forget_ppl": 10.0, "collapsed": False, "ci95": [1, 2], "relearn": {"curve": [1, 2], "drop": 0.2}}}
    books = {"ga": {"forget_ppl": 30.0, "collapsed": True, "ci95": [3, 4], "relearn": {"curve": [3, 4], "drop": 0.6}}}
    assert _mean_tree([code, books]) == {"ga": {"forget_ppl": 20.0, "collapsed": True, "relearn": {"drop": 0.4}}}


def test_a_method_override_changes_that_methods_runs_alone(experiment, micro_run, data_dir):
    out, _, _ = experiment
    ran = {method: read_yaml(out / "runs" / "books" / method / "config.yaml") for method in METHODS}
    assert ran["npo"]["train"]["lr"] == 1e-3 and ran["npo"]["method_args"]["npo_beta"] == 0.2
    assert ran["npo"]["train"]["epochs"] == 2  # the keys it does not name stay the study's
    for method in ("ga", "ga_gd_in"):
        assert ran[method]["train"]["lr"] == 3e-3 and ran[method]["method_args"]["npo_beta"] == 0.1
    common = {"model": str(micro_run), "data": data_dir, "methods": METHODS}
    with pytest.raises(ValueError, match="does not run"):
        UnlearningStudyConfig(**common, method_overrides={"rmu": {"train": {"lr": 1e-3}}})
    with pytest.raises(ValueError, match="lrr"):
        UnlearningStudyConfig(**common, method_overrides={"npo": {"train": {"lrr": 1e-3}}})


def test_exact_retraining_never_saw_the_forget_set(experiment, micro_run):
    out, _, results = experiment
    original, retrained = results["original"]["ppl"], results["retrained"]["ppl"]
    assert retrained["forget"] > 1.2 * original["forget"]
    members = json.loads((out / "retrain" / "books" / "members.json").read_text())
    assert "books/forget" not in members and "books/retain" in members
    # same tokenizer as the original, so the two models score identical chunks
    assert (out / "retrain" / "books" / "tokenizer" / "tokenizer.json").read_text() == (
        micro_run / "tokenizer" / "tokenizer.json").read_text()


def test_interrupted_experiment_resumes_without_redoing_finished_runs(experiment, capsys):
    out, config, _ = experiment
    kept = out / "runs" / "books" / "npo" / "results.json"
    stamp = kept.stat().st_mtime_ns
    redo = out / "runs" / "books" / "ga"
    uninterrupted = json.loads((redo / "results.json").read_text())
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    for item in sorted(redo.rglob("*"), reverse=True):
        item.unlink() if item.is_file() else item.rmdir()
    redo.rmdir()
    config_file = out / "config.yaml"
    assert main(["experiment", "unlearning", "--config", str(config_file), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["experiment", "unlearning", "--config", str(config_file), "--out", str(out), "--resume"]) == 0
    assert kept.stat().st_mtime_ns == stamp  # read back, not rerun
    resumed = json.loads((redo / "results.json").read_text())
    # the rerun trains and scores exactly as the uninterrupted run did
    assert resumed["after"] == uninterrupted["after"]
    assert resumed["train"]["history"] == uninterrupted["train"]["history"]
    assert json.loads((out / "results.json").read_text())["ga"]["ppl"] == uninterrupted["after"]["ppl"]


def test_sweep_grid_is_resumable_and_plotted(micro_run, data_dir, tmp_path):
    config = UnlearningStudyConfig(model=str(micro_run), data=data_dir, domains=["books"], methods=["ga"],
                                   unlearn=SETTINGS, grid={"lr": [1e-3, 5e-3], "steps": [2, 6]}, jobs=2)
    results = run_sweep(config, tmp_path / "sweep")
    cells = {(c["lr"], c["steps"]): c for c in results["cells"]}
    assert len(cells) == 4
    # more ascent (higher lr, more steps) pushes the forget set further from memorised
    assert cells[(5e-3, 6)]["forget_approx_ratio"] > cells[(1e-3, 2)]["forget_approx_ratio"]
    table = (tmp_path / "sweep" / "results.md").read_text()
    for (lr, steps), cell in cells.items():
        saved = json.loads((tmp_path / "sweep" / "cells" / "books" / "ga" / f"lr={lr:g},steps={steps}" /
                            "results.json").read_text())
        after = saved["after"]["ppl"]
        assert saved["train"]["steps"] == steps
        assert cell["forget_approx_ratio"] == after["forget"] / after["approximate"]
        assert cell["utility_ratio"] == saved["before"]["ppl"]["general"] / after["general"]
        assert f"{cell['forget_approx_ratio']:.3f}" in table and f"{cell['utility_ratio']:.3f}" in table
    heatmaps = [(tmp_path / "sweep" / f"heatmap_{metric}.png").read_bytes()
                for metric in ("forget_approx_ratio", "utility_ratio")]
    assert all(png.startswith(b"\x89PNG") for png in heatmaps) and heatmaps[0] != heatmaps[1]
    # resumed after an interruption, the finished cells are read back: same numbers, nothing retrained
    info = json.loads((tmp_path / "sweep" / "run.json").read_text())
    (tmp_path / "sweep" / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    model = tmp_path / "sweep" / "cells" / "books" / "ga" / "lr=0.005,steps=6" / "model" / "model.safetensors"
    stamp = model.stat().st_mtime_ns
    assert run_sweep(config, tmp_path / "sweep", resume=True) == json.loads(json.dumps(results))
    assert model.stat().st_mtime_ns == stamp


def test_a_diverged_models_perplexity_keeps_the_terminal_table_in_its_columns():
    from lethe.tables import format_unlearning_table

    def row(forget: float, approximate: float) -> dict:
        return {"ppl": {"forget": forget, "retain": 4.79, "approximate": approximate, "general": 39.61},
                "mia": {"auc": 0.41, "auc_folded": 0.59}, "approx_gap": {"log_ppl_ratio": 2.838}}

    header, original, diverged = format_unlearning_table({"original": row(3.63, 17.93),
                                                          "ga": row(1.17e14, 225321.5)}).splitlines()[:3]
    assert len(header) == len(original) == len(diverged)
    assert diverged.split()[1:3] == ["1.17e+14", "4.79"] and "2.25e+05" in diverged.split()
