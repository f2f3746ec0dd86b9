"""`lethe attack extract`: decode from each target's prefix and look for its secret."""

from __future__ import annotations

from lethe.config import ExtractConfig
from lethe.recipes import Flag, lazy, recipe
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt


def summary(results: dict, config: ExtractConfig, out) -> None:
    from lethe.attacks.extraction import format_extraction_table

    print(format_extraction_table(results))
    print(f"\nper-target generations in {out}/generations.jsonl")


def report(record: RunRecord, section: Section) -> None:
    from lethe.attacks.extraction import format_extraction_table

    r = record.results
    section.headline = f"NSR {r['nsr']}/{r['targets']} ({r['rate']:.1%}), token match {r['token_match']:.3f}"
    section.text.append(format_extraction_table(r))
    section.tables.append(Table(["kind", "targets", "NSR", "rate"],
                                [[kind, fmt(k["targets"]), fmt(k["nsr"]), f"{k['rate']:.1%}"]
                                 for kind, k in r["kinds"].items()], "exact extraction per kind of secret"))


recipe(command="attack extract", help="training-data extraction: decode from each target's prefix, look for its "
       "secret", schema=ExtractConfig, run=lazy("lethe.attacks.extraction", "extract"),
       flags={"model": Flag("the target model"),
              "targets": Flag("JSONL of target records, e.g. targets_member.jsonl from `lethe data pii`")},
       summary=summary, report=report)
