"""`lethe eval unlearning`: perplexity per role, Min-K% MIA, approximate-retraining gap and retrain distance."""

from __future__ import annotations

from lethe.config import EvalUnlearningConfig
from lethe.recipes import DATA, Flag, lazy, recipe
from lethe.recipes.unlearn import unlearning_table
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt


def summary(results: dict, config: EvalUnlearningConfig, out) -> None:
    from lethe.tables import format_unlearning_table

    print(format_unlearning_table({k: v for k, v in results.items() if k != "blind"}, results.get("blind")))


def report(record: RunRecord, section: Section) -> None:
    from lethe.attacks.blind import describe

    rows = {name: m for name, m in record.results.items() if name != "blind"}
    if record.results.get("blind"):
        section.notes.append(describe(record.results["blind"]))
    section.headline = ", ".join(f"{name}: forget PPL {m['ppl']['forget']:.2f}" for name, m in rows.items())
    section.tables.append(unlearning_table(rows, "models compared"))
    distances = {name: m["retrain_distance"] for name, m in rows.items() if "retrain_distance" in m}
    if distances:
        keys = list(next(iter(distances.values())))
        section.tables.append(Table(["model", *keys], [[n, *(fmt(d[k]) for k in keys)] for n, d in distances.items()],
                                    "distance to the model retrained without the forget set"))


recipe(command="eval unlearning", help="perplexity, Min-K% MIA and retraining distance of an unlearned model",
       schema=EvalUnlearningConfig, run=lazy("lethe.unlearning.evaluation", "eval_unlearning"),
       flags={"model": Flag("the unlearned model"), "original": Flag("the model before unlearning"),
              "retrained": Flag("a model retrained without the forget set"), "data": Flag(DATA),
              "domain": Flag("whose forget set was unlearned")},
       summary=summary, report=report)
