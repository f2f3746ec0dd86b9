"""`lethe report` on real runs of the micro model: saved numbers in the tables, embedded figures, no network."""

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from lethe.cli import main
from lethe.config import MiaConfig, UnlearnConfig
from lethe.errors import LetheError
from lethe.reporting import write_report


@pytest.fixture(scope="module")
def runs(micro_run, data_dir, tmp_path_factory):
    from lethe.attacks.mia_suite import run_mia
    from lethe.unlearning.run import unlearn

    root = tmp_path_factory.mktemp("report-runs")
    run_mia(MiaConfig(model=str(micro_run), members="books/forget", nonmembers="books/approximate", data=data_dir,
                      bootstrap=50, attacks=["loss", "min_k", "zlib"]), root / "mia")
    unlearn(UnlearnConfig(model=str(micro_run), data=data_dir, domain="books", method="ga",
                          train={"lr": 3e-3, "epochs": 1, "batch_size": 8, "warmup_ratio": 0}), root / "unlearn")
    return {"mia": root / "mia", "unlearn": root / "unlearn", "pretrain": micro_run}


def saved(run):
    return json.loads((run / "results.json").read_text())


def embedded_pngs(html: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data)))
            for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def html_table_rows(html: str) -> list[list[str]]:
    """Every body row of every <table> in the page, as its cells' text."""
    rows = []
    for table in re.findall(r"<table>.*?</table>", html, flags=re.S):
        for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1]):
            rows.append(re.findall(r"<td[^>]*>(.*?)</td>", row))
    return rows


def test_tables_hold_the_saved_numbers_and_figures_are_embedded(runs, tmp_path):
    html_path = write_report([runs["pretrain"], runs["mia"], runs["unlearn"]], tmp_path / "report")
    html, md = html_path.read_text(), (tmp_path / "report" / "report.md").read_text()
    html_rows, md_lines = html_table_rows(html), md.splitlines()
    attacks = saved(runs["mia"])["attacks"]
    assert list(attacks) == ["loss", "min_k", "zlib"]
    for name, m in attacks.items():  # each attack's row, its cells written out from results.json
        low, high = m["ci95"]["auc"]
        n = saved(runs["mia"])["nonmembers"]  # a rate at an FPR below 1/n cannot be estimated: n/a
        cells = [name, f"{m['auc']:.3f} ({low:.3f}–{high:.3f})",
                 *(f"{m[key]:.3f}" if fpr * n >= 1 else f"n/a (n={n})"
                   for key, fpr in (("tpr@0.1%fpr", 0.001), ("tpr@1%fpr", 0.01), ("tpr@5%fpr", 0.05)))]
        assert cells in html_rows
        assert "| " + " | ".join(cells) + " |" in md_lines
    unlearned = saved(runs["unlearn"])
    for stage in ("before", "after"):
        assert f"{unlearned[stage]['ppl']['forget']:.2f}" in html
        assert f"{unlearned[stage]['mia']['auc']:.3f}" in md
    assert f"{saved(runs['pretrain'])['ppl']['books/forget']:.2f}" in html
    # pretrain loss curve, the MIA run's two ROC plots, unlearn trade-off (+ its loss curve when logged)
    images = embedded_pngs(html)
    assert len(images) >= 4 and all(image.size[0] > 200 for image in images)
    figures = sorted((tmp_path / "report" / "report_figures").glob("*.png"))
    assert len(figures) == len(images) and all(f"report_figures/{f.name}" in md for f in figures)
    assert html.count("<details>") >= 6  # config and environment of each run, collapsed
    assert "lethe attack mia" in html and "numpy" in html  # env.json's package versions


def test_the_page_needs_no_network_and_runs_no_script(runs, tmp_path):
    html = write_report([runs["mia"], runs["unlearn"]], tmp_path).read_text()
    references = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html, flags=re.IGNORECASE)
    assert references and all(ref.startswith("data:image/png;base64,") for ref in references)
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    assert "url(" not in html


def test_roc_is_redrawn_from_saved_scores_when_the_plots_are_gone(runs, tmp_path):
    run = shutil.copytree(runs["mia"], tmp_path / "mia")
    shutil.rmtree(run / "plots")
    html = write_report(run).read_text()
    assert html.count("redrawn from the saved per-sample scores</figcaption>") == 2
    assert not (run / "plots").exists() and (run / "report.html").is_file()
    # the same curves as the run drew: the attack's own plotting code on the same scores
    assert len(embedded_pngs(html)) == 2


def test_nested_runs_are_reported_inside_their_parent(runs, tmp_path):
    parent = tmp_path / "demo"
    parent.mkdir()
    (parent / "run.json").write_text(json.dumps({"command": "demo", "status": "done"}))
    (parent / "results.json").write_text(json.dumps({"seconds": 12.5, "verdict": {"books": True}}))
    shutil.copytree(runs["mia"], parent / "leakage" / "mia")
    shutil.copytree(runs["unlearn"], parent / "unlearning", ignore=shutil.ignore_patterns("model"))
    html = write_report(parent).read_text()
    assert "<h2>demo: demo</h2>" in html
    assert "<h3>attack mia: mia</h3>" in html and "<h3>unlearn: unlearning</h3>" in html
    assert "12.500" in html and "verdict.books" in html  # unknown command: results.json's scalars
    best = max(saved(runs["mia"])["attacks"].values(), key=lambda m: m["auc"])
    assert f"AUC {best['auc']:.3f}" in html  # the child's headline in the overview


def test_unfinished_or_broken_runs_are_reported_with_a_warning(runs, tmp_path, caplog):
    run = shutil.copytree(runs["mia"], tmp_path / "failed")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "failed", "error": "<script>alert(1)</script>"}))
    (run / "results.json").unlink()
    with caplog.at_level("WARNING", logger="lethe"):
        html = write_report(run).read_text()
    assert "the run is failed" in caplog.text and "results.json is missing" in caplog.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "results.json is missing" in html and "config.yaml" in html

    partial = shutil.copytree(runs["mia"], tmp_path / "partial")
    (partial / "results.json").write_text(json.dumps({"model": "m", "members": 3}))
    html = write_report(partial).read_text()
    assert "lacks what this section expects" in html and "<td>members</td>" in html


def test_bad_paths_are_refused_in_one_line(runs, tmp_path, capsys):
    with pytest.raises(LetheError, match="not a Lethe run directory"):
        write_report(tmp_path)
    with pytest.raises(LetheError, match="not a directory"):
        write_report(tmp_path / "nowhere")
    with pytest.raises(LetheError, match="several runs need --out"):
        write_report([runs["mia"], runs["unlearn"]])
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_writes_the_report_into_a_single_run(runs, tmp_path, capsys):
    run = shutil.copytree(runs["mia"], tmp_path / "mia")
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").is_file() and (run / "report.md").is_file()
    assert "report written to" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (Debian: apt-get install chromium)")
def test_the_page_renders_in_headless_chromium(runs, tmp_path):
    html = write_report([runs["pretrain"], runs["mia"], runs["unlearn"]], tmp_path / "report")
    shot = tmp_path / "page.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1200)
    assert pixels.std() > 20  # a blank or error page is nearly uniform
    assert (pixels < 100).mean() > 0.01  # dark text and plot lines were drawn
