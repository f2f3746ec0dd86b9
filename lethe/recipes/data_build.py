"""`lethe data build`: forget/retain/approximate/general splits of the offline corpora."""

from __future__ import annotations

from lethe.config import DataBuildConfig
from lethe.recipes import Flag, lazy, recipe
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt


def summary(results: dict, config: DataBuildConfig, out) -> None:
    from lethe.tables import format_split_table

    print(format_split_table(results))
    print(f"\nsplits written to {config.out}")


def report(record: RunRecord, section: Section) -> None:
    splits = record.results["splits"]
    section.headline = f"{len(splits)} splits, {sum(s['documents'] for s in splits.values()):,} documents"
    section.tables.append(Table(["split", "documents", "characters", "tokens"],
                                [[name, *(fmt(s[k]) for k in ("documents", "characters", "tokens"))]
                                 for name, s in splits.items()], f"tokens counted with {record.results['tokenizer']}"))


recipe(command="data build", help="forget/retain/approximate/general splits, deduplicated, by seed",
       schema=DataBuildConfig, run=lazy("lethe.data.build", "build_data"), api_name="build_data", out="none",
       flags={"out": Flag("directory for the splits (default: $LETHE_HOME/data/default)"),
              "seed": Flag("shuffling seed")},
       summary=summary, report=report)
