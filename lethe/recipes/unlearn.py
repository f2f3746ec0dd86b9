"""`lethe unlearn`: one method on one forget set, scored before and after."""

from __future__ import annotations

from lethe.config import UnlearnConfig
from lethe.config.base import METHODS_HELP
from lethe.recipes import DATA, Flag, lazy, recipe
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import key_values


def summary(results: dict, config: UnlearnConfig, out) -> None:
    from lethe.tables import format_unlearning_table

    print(format_unlearning_table({"original": results["before"], config.method: results["after"]},
                                  results.get("blind")))
    print(f"\nunlearned model saved to {results['path']}")
    if results.get("diverged"):
        print(f"DIVERGED: {results['diverged_reason']}")
    if results.get("unchanged"):
        print("UNCHANGED: training left every weight as it was; the saved model is the original")


def unlearning_table(rows: dict[str, dict], caption: str) -> Table:
    from lethe.tables import UNLEARNING_HEADER, UNLEARNING_NOTE, unlearning_rows

    return Table(UNLEARNING_HEADER, unlearning_rows(rows), f"{caption}. {UNLEARNING_NOTE}")


def tradeoff_point(metrics: dict, original: dict) -> tuple[float, float]:
    """(forget / approximate perplexity, general perplexity kept): where a model sits on the trade-off plot."""
    ppl = metrics["ppl"]
    return ppl["forget"] / ppl["approximate"], original["ppl"]["general"] / ppl["general"]


def report(record: RunRecord, section: Section) -> None:
    from lethe.attacks.blind import describe
    from lethe.reporting.plots import tradeoff

    r = record.results
    if r.get("diverged"):  # its non-finite numbers were saved as null
        section.headline = f"{r['method']} on {r['domain']}: diverged ({r['diverged_reason']})"
        return
    before, after = r["before"], r["after"]
    section.headline = (f"{r['method']} on {r['domain']}: forget PPL {before['ppl']['forget']:.2f} → "
                        f"{after['ppl']['forget']:.2f}, MIA AUC {before['mia']['auc']:.3f} → {after['mia']['auc']:.3f}"
                        + (" (collapsed: says nothing about forgetting)" if after.get("collapsed") else ""))
    if after.get("collapse"):
        section.notes.append(f"The unlearned model has collapsed: {after['collapse']}.")
    section.tables.append(unlearning_table({"original": before, r["method"]: after}, f"{r['domain']} forget set"))
    if r.get("blind"):
        section.notes.append(describe(r["blind"]))
    section.tables.append(key_values({"steps": r["train"]["steps"], "stopped": r["train"]["stopped"],
                                      **{f"cost: {k}": v for k, v in r["cost"].items()}}, "training and cost"))
    section.add(tradeoff({r["method"]: [tradeoff_point(before, before), tradeoff_point(after, before)]},
                         f"{r['method']} on {r['domain']} (original → unlearned)"))


recipe(command="unlearn", help="unlearn a forget set with one method, scored before and after", schema=UnlearnConfig,
       run=lazy("lethe.unlearning.run", "unlearn"),
       flags={"model": Flag("model directory, run directory or alias"), "data": Flag(DATA),
              "domain": Flag("whose forget set to unlearn (code, science, books, ...)"),
              "method": Flag(METHODS_HELP)},
       summary=summary, report=report, multi_process=True)
