"""One table model, `Table`, rendered as markdown, as aligned terminal text and (in lethe.reporting.html) as
HTML; the row builders here also feed `lethe report`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


def _markdown_row(cells: list[str]) -> str:
    # an empty cell is written "| |", as the hand-written markdown tables always were
    return "|" + "".join(f" {_markdown_cell(c)} |" if c else " |" for c in cells)


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass
class Table:
    """Cells as text, formatted once: the terminal, results.md and the HTML report render this same object."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)  # what the numbers mean, printed under the table
    align: str = ""  # per column, "r" right-aligns it in markdown; columns past the string stay left-aligned

    def to_markdown(self) -> str:
        """A GitHub pipe table, its caption in italics above it and each note a paragraph below it."""
        rule = "|" + "".join("---:|" if self.align[i:i + 1] == "r" else "---|" for i in range(len(self.header)))
        table = "\n".join([_markdown_row(self.header), rule, *(_markdown_row(row) for row in self.rows)])
        return "\n\n".join(([f"*{self.caption}*"] if self.caption else []) + [table, *self.notes])

    def to_terminal(self, widths: Sequence[int] | None = None) -> str:
        """The first column left-aligned and the rest right-aligned, each `widths[i]` wide (default: its widest
        cell, plus two spaces between columns); the caption above, the notes below."""
        if widths is None:
            columns = zip(self.header, *self.rows, strict=True)
            widths = [max(map(len, column)) + (2 if i else 0) for i, column in enumerate(columns)]
        lines = [row[0].ljust(widths[0]) + "".join(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
                 for row in (self.header, *self.rows)]
        return "\n".join(([self.caption] if self.caption else []) + lines + self.notes)


SPLIT_ORDER = ("forget", "retain", "approximate", "eval")


def _domains_and_splits(names) -> tuple[list[str], list[str]]:
    domains = list(dict.fromkeys(name.split("/")[0] for name in names))
    present = {name.split("/")[1] for name in names}
    splits = [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))
    return domains, splits


def ppl_rows(ppl: dict[str, float]) -> tuple[list[str], list[list[str]]]:
    """Domains as rows, splits as columns: members (forget, retain) should sit below approximate."""
    domains, splits = _domains_and_splits(ppl)
    rows = [[domain] + [f"{ppl[f'{domain}/{s}']:.2f}" if f"{domain}/{s}" in ppl else "-" for s in splits]
            for domain in domains]
    return ["perplexity", *splits], rows


def format_ppl_table(ppl: dict[str, float]) -> str:
    header, rows = ppl_rows(ppl)
    return Table(header, rows).to_terminal([12] + [13] * (len(header) - 1))


def format_split_table(results: dict) -> str:
    rows = [[name, f"{row['documents']:,}", f"{row['characters']:,}", f"{row['tokens']:,}"]
            for name, row in results["splits"].items()]
    dropped = results["dropped"]
    footer = (f"tokens counted with {results['tokenizer']}; dropped {dropped['exact_duplicates']} exact and "
              f"{dropped['near_duplicates']} near duplicates")
    return Table(["split", "documents", "characters", "tokens"], rows, notes=[footer]).to_terminal([22, 10, 12, 10])


UNLEARNING_HEADER = ["model", "forget", "retain", "approx", "general", "MIA AUC", "folded", "gap"]
UNLEARNING_NOTE = ("perplexity per role; MIA: Min-K% forget vs approximate; gap: log(ppl forget / ppl approximate), "
                   "0 = looks unseen; collapsed: predicts a uniform distribution on held-out text, or a forget or "
                   "retain perplexity over 10× the original's, so its AUC and gap say nothing about forgetting")


def number_text(value: float | None, digits: int = 2) -> str:
    """`digits` decimals, or three significant digits once a diverged model's perplexity would break the columns."""
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.3g}"


def unlearning_rows(rows: dict[str, dict]) -> list[list[str]]:
    """One row per model: perplexity per role, Min-K% AUC, and the approximate-retraining gap."""
    table = []
    for name, m in rows.items():
        ppl = m["ppl"]
        shown = f"{name} (collapsed)" if m.get("collapsed") else name
        table.append([shown, *(number_text(ppl[role]) for role in ("forget", "retain", "approximate", "general")),
                      f"{m['mia']['auc']:.3f}", f"{m['mia']['auc_folded']:.3f}",
                      f"{m['approx_gap']['log_ppl_ratio']:.3f}"])
    return table


def format_unlearning_table(rows: dict[str, dict], blind: dict | None = None) -> str:
    notes = [UNLEARNING_NOTE]
    if blind is not None:
        from lethe.attacks.blind import describe

        notes.append(describe(blind))
    return Table(UNLEARNING_HEADER, unlearning_rows(rows), notes=notes).to_terminal([16, 9, 9, 9, 9, 9, 8, 8])
