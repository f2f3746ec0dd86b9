"""`lethe attack mia`: every membership-inference attack, from one scoring pass per model."""

from __future__ import annotations

from dataclasses import replace

from lethe.config import MiaConfig
from lethe.recipes import DATA, Flag, lazy, recipe
from lethe.reporting.document import Section
from lethe.reporting.records import RunRecord


def summary(results: dict, config: MiaConfig, out) -> None:
    from lethe.attacks.mia_suite import format_mia_table

    print(format_mia_table(results))
    print(f"\n{results['members']} members, {results['nonmembers']} non-members; ROC plots in {out}/plots")


def report(record: RunRecord, section: Section) -> None:
    from lethe.attacks.metrics import rate_text
    from lethe.attacks.mia_suite import mia_table
    from lethe.reporting.plots import roc_from_scores, saved_png

    r = record.results
    section.tables.append(replace(mia_table(r), caption=f"{r['members']} members vs {r['nonmembers']} non-members; "
                                                        f"model {r['model']}"))
    best = max(r["attacks"].items(), key=lambda item: item[1]["auc"])
    section.headline = (f"best attack {best[0]}: AUC {best[1]['auc']:.3f}, TPR@1%FPR "
                        f"{rate_text(best[1]['tpr@1%fpr'], 0.01, r.get('nonmembers'))}")
    saved = [saved_png(record.path / p, f"{p}, as the run saved it") for p in r.get("plots", [])]
    if saved and all(saved):
        section.figures += saved
    elif (record.path / "scores" / "attack_scores.jsonl").is_file():
        section.figures += roc_from_scores(record.path)
    else:
        section.notes.append("no ROC plot and no scores/attack_scores.jsonl to redraw one from")


recipe(command="attack mia", help="every membership-inference attack, from one scoring pass per model",
       schema=MiaConfig, run=lazy("lethe.attacks.mia_suite", "run_mia"),
       flags={"model": Flag("the target model"),
              "members": Flag("member set: a split of --data or a JSONL/text/parquet file"),
              "nonmembers": Flag("non-member set (split or file), disjoint from the members"),
              "reference_model": Flag("reference model for the reference_model attack (same tokenizer)"),
              "calibration": Flag("auxiliary non-members for the reference_data attack (split or file)"),
              "reference_victims": Flag("references.json of reference victims for lira_online, lira_offline, rmia"),
              "data": Flag(DATA)},
       summary=summary, report=report)
