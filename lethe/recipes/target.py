"""`lethe target`: known members on a pre-trained LLM — continued training on forget + retain, and the exact
retrain on retain alone."""

from __future__ import annotations

from lethe.config import TargetConfig
from lethe.recipes import DATA, Flag, lazy, recipe
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt


def summary(results: dict, config: TargetConfig, out) -> None:
    for name in ("target", "retrain"):
        train = results[name]
        print(f"{name}: {train['steps']} steps, {train['tokens']:,} tokens on {', '.join(train['splits'])} in "
              f"{train['seconds']:.0f} s -> {train['path']}")
    splits = list(results["ppl"]["base"])
    print(f"{'perplexity':<24}" + "".join(f"{who:>10}" for who in results["ppl"]))
    for split in splits:
        print(f"{split:<24}" + "".join(f"{results['ppl'][who][split]:>10.2f}" for who in results["ppl"]))


def report(record: RunRecord, section: Section) -> None:
    r = record.results
    section.headline = (f"{r['model']} trained on {', '.join(r['target']['splits'])} (target) and on "
                        f"{', '.join(r['retrain']['splits'])} (exact retrain)")
    section.tables.append(Table(["model", "splits trained on", "steps", "tokens", "seconds"],
                                [[who, ", ".join(r[who]["splits"]), fmt(r[who]["steps"]), fmt(r[who]["tokens"]),
                                  fmt(r[who]["seconds"])] for who in ("target", "retrain")], "same recipe and seed"))
    splits = list(r["ppl"]["base"])
    section.tables.append(Table(["perplexity", *splits], [[who, *(fmt(r["ppl"][who][s]) for s in splits)]
                                                          for who in r["ppl"]],
                                "the forget set is a member of the target only"))


recipe(command="target", help="known members on a pre-trained LLM: continued training on forget + retain, and "
       "its exact retrain on retain alone", schema=TargetConfig, run=lazy("lethe.training.target", "build_target"),
       flags={"model": Flag("the pre-trained model"), "data": Flag(DATA)}, summary=summary, report=report)
