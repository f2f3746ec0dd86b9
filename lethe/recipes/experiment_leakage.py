"""`lethe experiment leakage`: released variants × victim fine-tuning modes — MIA, extraction, utility."""

from __future__ import annotations

from dataclasses import replace

from lethe.config import LeakageConfig
from lethe.recipes import DATA, JOBS, STUDY_RESUME, Flag, lazy, recipe
from lethe.reporting.document import Section
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import saved_figures

LEAKAGE_FLAGS = {"model": Flag("the clean pre-trained model"), "data": Flag(DATA), "jobs": JOBS}


def summary(results: dict, config: LeakageConfig, out) -> None:
    from lethe.leakage.report import leakage_table

    print(leakage_table(results))
    print(f"tables and plots in {out}/results.md and {out}/*.png")


def report(record: RunRecord, section: Section) -> None:
    from lethe.attacks.blind import is_separable
    from lethe.leakage.report import blind_line, leakage_tables, release_lines

    r = record.results
    captions = ["released variant × victim fine-tuning mode: membership inference on the targets (AUC, mean over "
                "seeds), secrets extracted (NSR), validation perplexity",
                f"each variant against the {r['baseline']} release on the same records: ΔAUC and its paired 95% "
                "bootstrap interval",
                "per-record mechanism: how far the release pushed the targets' loss, how far fine-tuning pulled it "
                "down, and the member/non-member gap after fine-tuning"]
    section.tables += [replace(table, caption=caption)
                       for table, caption in zip(leakage_tables(r), captions, strict=True)]
    section.notes += [blind_line(r), *release_lines(r)]
    shown = [(v, m, a, c) for v, modes in r["comparisons"].items() for m, attacks in modes.items()
             for a, c in attacks.items()]
    higher = [item for item in shown if item[3]["ci95"][0] > 0]
    section.headline = (f"{len(shown)} comparisons with {r['baseline']}, {len(higher)} higher with their interval "
                        f"above 0; blind AUC {r['blind']['auc']:.3f}"
                        + (" (targets SEPARABLE without the model)" if is_separable(r["blind"]) else ""))
    saved_figures(record, section, r.get("plots") or [], "as the experiment saved it")


recipe(command="experiment leakage", help="released variants × victim fine-tuning modes: MIA, extraction, utility",
       schema=LeakageConfig, run=lazy("lethe.leakage.study", "run_leakage"), flags=LEAKAGE_FLAGS,
       switches=STUDY_RESUME, summary=summary, report=report, summarises_children=True)
