"""`lethe eval unlearning`: perplexity per role, Min-K% MIA, approximate-retraining gap and retrain distance."""

from __future__ import annotations

from lethe.config import EvalUnlearningConfig
from lethe.recipes import DATA, Flag, lazy, recipe
from lethe.recipes.unlearn import unlearning_table
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt

QUANTIZED = {"forget_ppl": "forget PPL", "approx_gap": "gap", "mia_auc": "MIA AUC",
             "forget_ppl_ratio": "forget PPL / retrain's", "forgetting_kept": "forgetting kept"}


def quantized_table(results: dict) -> Table | None:
    """The quantization attack: each model with its weights rounded, and how much of the forgetting survives."""
    rows = [[name, bits, *(fmt(row.get(key)) for key in QUANTIZED)]
            for name, m in results.items() if name != "blind" for bits, row in m.get("quantized", {}).items()]
    return Table(["model", "weights", *QUANTIZED.values()], rows,
                 "quantization attack (round-to-nearest per group): forgetting kept is the share of the unlearned "
                 "model's rise in log forget perplexity over the original that survives when both are quantized; "
                 "forget PPL / retrain's is against the retrain quantized alike") if rows else None


def relearn_table(results: dict) -> Table | None:
    """The relearning attack: how much of each model's forgetting a few fine-tuning steps undo."""
    rows = [[name, mode, str(row["steps"]), fmt(row["curve"][0]["forget_ppl"]), fmt(row["curve"][-1]["forget_ppl"]),
             fmt(row.get("recovered")), fmt(row.get("recovered_beyond_retrain"))]
            for name, m in results.items() if name != "blind" for mode, row in m.get("relearn", {}).items()]
    return Table(["model", "fine-tuned on", "steps", "held-out forget PPL before", "after", "recovered",
                  "beyond the retrain"], rows,
                 "relearning attack: recovered is the share of the model's rise in log forget perplexity over the "
                 "original that the steps undo; beyond the retrain subtracts what the exact retrain gains from the "
                 "same steps") if rows else None


def verbmem_table(results: dict) -> Table | None:
    rows = [[name, fmt(m["verbmem"]["rouge_l"]), fmt(m["verbmem"]["chunks"])]
            for name, m in results.items() if name != "blind" and "verbmem" in m]
    return Table(["model", "ROUGE-L F1", "chunks"], rows, "verbatim memorisation (MUSE): greedy continuation of each "
                 "forget chunk's prefix against its true continuation") if rows else None


def u_mia_table(results: dict) -> Table | None:
    from lethe.unlearning.report import u_mia_table as table

    return table({name: m for name, m in results.items() if name != "blind"})


def summary(results: dict, config: EvalUnlearningConfig, out) -> None:
    from lethe.tables import format_unlearning_table

    print(format_unlearning_table({k: v for k, v in results.items() if k != "blind"}, results.get("blind")))
    for table in (quantized_table(results), relearn_table(results), verbmem_table(results), u_mia_table(results)):
        if table is not None:
            print("\n" + table.to_terminal())


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
    attacks = (quantized_table(record.results), relearn_table(record.results), verbmem_table(record.results),
               u_mia_table(record.results))
    section.tables += [table for table in attacks if table is not None]


recipe(command="eval unlearning", help="perplexity, Min-K% MIA and retraining distance of an unlearned model",
       schema=EvalUnlearningConfig, run=lazy("lethe.unlearning.evaluation", "eval_unlearning"),
       flags={"model": Flag("the unlearned model"), "original": Flag("the model before unlearning"),
              "retrained": Flag("a model retrained without the forget set"), "data": Flag(DATA),
              "domain": Flag("whose forget set was unlearned")},
       summary=summary, report=report)
