"""`lethe experiment unlearning`: every method × domain, against the original and the retrained model."""

from __future__ import annotations

from dataclasses import replace

from lethe.config import UnlearningStudyConfig
from lethe.recipes import ACCEPT_DATA_CHANGE, DATA, JOBS, STUDY_RESUME, Flag, lazy, recipe
from lethe.recipes.unlearn import tradeoff_point
from lethe.reporting.document import Section
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt, saved_figures

STUDY_FLAGS = {"model": Flag("the model to unlearn from"), "data": Flag(DATA), "jobs": JOBS}


def summary(results: dict, config: UnlearningStudyConfig, out) -> None:
    from lethe.tables import format_unlearning_table
    from lethe.unlearning.report import attack_table

    rows = {k: v for k, v in results.items() if isinstance(v, dict) and "ppl" in v}
    print(format_unlearning_table(rows))
    if (attacks := attack_table(rows)) is not None:
        print("\n" + attacks.to_terminal())
    print(f"\ntables and plots in {out}/results.md and {out}/methods.png")


def report(record: RunRecord, section: Section) -> None:
    from lethe.attacks.blind import describe
    from lethe.reporting.plots import tradeoff
    from lethe.unlearning.report import SUMMARIES, attack_table, experiment_table, requests_table

    r = record.results
    aggregate = {k: v for k, v in r.items() if k not in SUMMARIES}
    section.tables += [replace(experiment_table(aggregate), caption="mean over domains " + ", ".join(r["by_domain"])),
                       *(replace(experiment_table(rows), caption=domain) for domain, rows in r["by_domain"].items())]
    for domain, rows in r["by_domain"].items():
        if (attacks := attack_table(rows)) is not None:
            section.tables.append(replace(attacks, caption=f"{domain}, does the forgetting hold? {attacks.caption}"))
    section.tables += [replace(requests_table(answers), caption=f"{domain}: deletion requests") 
                       for domain, answers in r.get("requests", {}).items()]
    methods = [name for name in aggregate if name not in ("original", "retrained") and "diverged" not in r[name]]
    best = min(methods, key=lambda n: abs(r[n]["approx_gap"]["log_ppl_ratio"]), default=None)
    section.headline = (f"{len(methods)} methods × {len(r['by_domain'])} domains"
                        + (f"; smallest forget–approximate gap: {best}" if best else ""))
    section.notes += [f"{domain}: {describe(blind)}" for domain, blind in r.get("blind", {}).items() if blind]
    for domain, agreement in r.get("yardstick_agreement", {}).items():
        section.notes.append(f"{domain}: approximate yardstick vs exact retraining, Spearman "
                             f"{fmt(agreement['spearman'])} over {agreement['methods']} methods")
    saved_figures(record, section, ["methods.png"], "forget/approximate perplexity and MIA AUC per method")
    points = {}
    for rows in r["by_domain"].values():
        for name, m in rows.items():
            if "diverged" not in m and name != "retrained":
                points.setdefault(name, []).append(tradeoff_point(m, rows["original"]))
    section.add(tradeoff(points, "methods × domains (one point per domain)"))


recipe(command="experiment unlearning", help="every method × domain, against the original and retrained model",
       schema=UnlearningStudyConfig, run=lazy("lethe.unlearning.study", "run_experiment"), flags=STUDY_FLAGS,
       switches=STUDY_RESUME | ACCEPT_DATA_CHANGE, summary=summary, report=report, summarises_children=True)
