"""A report as plain data (sections of tables, figures and text) that the HTML and markdown writers share."""

from __future__ import annotations

from dataclasses import dataclass, field

from lethe.reporting.records import RunRecord
from lethe.tables import Table

__all__ = ["Figure", "Section", "Table"]


@dataclass
class Figure:
    png: bytes
    caption: str
    name: str  # file name of the PNG beside report.md


@dataclass
class Section:
    run: RunRecord
    title: str
    headline: str = ""  # one line for the report's overview table
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    text: list[str] = field(default_factory=list)  # preformatted blocks (terminal tables)
    notes: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)  # what the run showed, a claim a line: the report opens with them
    children: list[Section] = field(default_factory=list)
    sub_runs: Table | None = None  # sub-runs the section already summarises, listed rather than expanded

    def add(self, figure: Figure | None) -> None:
        if figure is not None:
            self.figures.append(figure)

