"""The whole unlearning study and the robustness sweep, on the micro model."""

import json

import pytest

from lethe.cli import main
from lethe.config import UnlearningStudyConfig
from lethe.unlearning.study import run_experiment, run_sweep

SETTINGS = {"train": {"lr": 3e-3, "epochs": 2, "batch_size": 8, "warmup_ratio": 0}}


@pytest.fixture(scope="module")
def experiment(micro_run, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "experiment"
    config = UnlearningStudyConfig(model=str(micro_run), data=data_dir, domains=["books"],
                                   methods=["ga_gd_in", "npo", "ga"], unlearn=SETTINGS, retrain=True)
    return out, config, run_experiment(config, out)


def test_experiment_results_hold_every_number_the_paper_reports(experiment):
    out, _, results = experiment
    for name in ("original", "retrained", "ga_gd_in", "npo", "ga"):
        row = results[name]
        assert set(row["ppl"]) == {"forget", "retain", "approximate", "general"}
        assert {"auc", "auc_folded", "tpr@1%fpr"} <= set(row["mia"])
        assert {"log_ppl_ratio", "mink_ks"} <= set(row["approx_gap"])
    for method in ("ga_gd_in", "npo", "ga"):
        assert {"flops", "seconds", "ratio_vs_pretrain"} <= set(results[method]["cost"])
        assert {"forget_ppl_ratio", "mia_auc"} <= set(results[method]["retrain_distance"])
    assert json.loads((out / "results.json").read_text())["ga"] == results["ga"]
    assert "| ga_gd_in |" in (out / "results.md").read_text() and (out / "methods.png").stat().st_size > 10_000


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
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    for item in sorted(redo.rglob("*"), reverse=True):
        item.unlink() if item.is_file() else item.rmdir()
    redo.rmdir()
    config_file = out / "config.yaml"
    assert main(["experiment", "unlearning", "--config", str(config_file), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["experiment", "unlearning", "--config", str(config_file), "--out", str(out), "--resume"]) == 0
    assert kept.stat().st_mtime_ns == stamp and (redo / "results.json").is_file()


def test_sweep_grid_is_resumable_and_plotted(micro_run, data_dir, tmp_path):
    config = UnlearningStudyConfig(model=str(micro_run), data=data_dir, domains=["books"], methods=["ga"],
                                   unlearn=SETTINGS, grid={"lr": [1e-3, 5e-3], "steps": [2, 6]})
    results = run_sweep(config, tmp_path / "sweep")
    cells = {(c["lr"], c["steps"]): c for c in results["cells"]}
    assert len(cells) == 4
    # more ascent (higher lr, more steps) pushes the forget set further from memorised
    assert cells[(5e-3, 6)]["forget_approx_ratio"] > cells[(1e-3, 2)]["forget_approx_ratio"]
    for name in ("results.md", "heatmap_forget_approx_ratio.png", "heatmap_utility_ratio.png"):
        assert (tmp_path / "sweep" / name).is_file()


def test_a_diverged_models_perplexity_keeps_the_terminal_table_in_its_columns():
    from lethe.tables import format_unlearning_table

    def row(forget: float, approximate: float) -> dict:
        return {"ppl": {"forget": forget, "retain": 4.79, "approximate": approximate, "general": 39.61},
                "mia": {"auc": 0.41, "auc_folded": 0.59}, "approx_gap": {"log_ppl_ratio": 2.838}}

    header, original, diverged = format_unlearning_table({"original": row(3.63, 17.93),
                                                          "ga": row(1.17e14, 225321.5)}).splitlines()[:3]
    assert len(header) == len(original) == len(diverged)
    assert diverged.split()[1:3] == ["1.17e+14", "4.79"] and "2.25e+05" in diverged.split()
