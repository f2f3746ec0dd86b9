"""`lethe eval ppl`: token-weighted perplexity and next-token accuracy per split."""

from __future__ import annotations

from lethe.config import EvalPplConfig
from lethe.recipes import DATA, Flag, comma_list, lazy, recipe
from lethe.recipes.pretrain import ppl_table
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt


def summary(results: dict, config: EvalPplConfig, out) -> None:
    from lethe.tables import format_ppl_table

    print(format_ppl_table(results["ppl"]))


def report(record: RunRecord, section: Section) -> None:
    r = record.results
    section.headline = f"{len(r['ppl'])} splits scored"
    section.tables.append(ppl_table(r["ppl"]))
    section.tables.append(Table(["split", "perplexity", "next-token accuracy", "chunks", "tokens"],
                                [[name, fmt(s["ppl"]), fmt(s["accuracy"]), fmt(s["chunks"]), fmt(s["tokens"])]
                                 for name, s in r["splits"].items()], "per split"))


recipe(command="eval ppl", help="perplexity and next-token accuracy per split", schema=EvalPplConfig,
       run=lazy("lethe.perplexity", "eval_ppl"),
       flags={"model": Flag("model directory, run directory or alias (smollm2-135m)"), "data": Flag(DATA),
              "splits": Flag("splits to score, e.g. code/forget,code/approximate", parse=comma_list)},
       summary=summary, report=report)
