"""`lethe sweep`: method × learning rate × steps (× domain), the robustness grid of the unlearning study."""

from __future__ import annotations

from lethe.config import UnlearningStudyConfig
from lethe.recipes import ACCEPT_DATA_CHANGE, STUDY_RESUME, lazy, recipe
from lethe.recipes.experiment_unlearning import STUDY_FLAGS
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt, saved_figures


def summary(results: dict, config: UnlearningStudyConfig, out) -> None:
    print(f"{len(results['cells'])} cells; table and heatmaps in {out}")


def report(record: RunRecord, section: Section) -> None:
    from lethe.reporting.plots import tradeoff

    cells = record.results["cells"]
    done = [c for c in cells if not c["diverged"]]
    collapsed = sum(bool(c.get("collapsed")) for c in cells)
    section.headline = f"{len(cells)} cells, {len(cells) - len(done)} diverged, {collapsed} collapsed"
    rows = [[c["domain"], c["method"], f"{c['lr']:g}", str(c["steps"])]
            + (["diverged", "–", "–"] if c["diverged"] else
               [fmt(c["forget_approx_ratio"]), fmt(c["utility_ratio"]),
                fmt(c["mia_auc"]) + (" (collapsed)" if c.get("collapsed") else "")]) for c in cells]
    section.tables.append(Table(["domain", "method", "lr", "steps", "forget/approx PPL", "utility ratio", "MIA AUC"],
                                rows, "robustness grid (utility ratio: general PPL before / after)"))
    saved_figures(record, section, ["heatmap_forget_approx_ratio.png", "heatmap_utility_ratio.png"],
                  "robustness heatmap over learning rate × steps")
    points = {}
    for c in done:
        points.setdefault(f"{c['method']} ({c['domain']})", []).append((c["forget_approx_ratio"], c["utility_ratio"]))
    section.add(tradeoff(points, "every sweep cell"))


recipe(command="sweep", help="method × learning rate × steps (× domain) robustness grid", schema=UnlearningStudyConfig,
       run=lazy("lethe.unlearning.study", "run_sweep"), flags=STUDY_FLAGS, switches=STUDY_RESUME | ACCEPT_DATA_CHANGE,
       summary=summary, report=report, summarises_children=True)
