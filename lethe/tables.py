"""Plain-text tables for the terminal and markdown; the row builders also feed `lethe report`."""

from __future__ import annotations

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
    lines = [header[0].ljust(12) + "".join(s.rjust(13) for s in header[1:])]
    lines += [row[0].ljust(12) + "".join(c.rjust(13) for c in row[1:]) for row in rows]
    return "\n".join(lines)


def format_split_table(results: dict) -> str:
    header = f"{'split':<22}{'documents':>10}{'characters':>12}{'tokens':>10}"
    rows = [f"{name:<22}{row['documents']:>10,}{row['characters']:>12,}{row['tokens']:>10,}"
            for name, row in results["splits"].items()]
    dropped = results["dropped"]
    footer = (f"tokens counted with {results['tokenizer']}; dropped {dropped['exact_duplicates']} exact and "
              f"{dropped['near_duplicates']} near duplicates")
    return "\n".join([header, *rows, footer])


UNLEARNING_HEADER = ["model", "forget", "retain", "approx", "general", "MIA AUC", "folded", "gap"]
UNLEARNING_NOTE = ("perplexity per role; MIA: Min-K% forget vs approximate; gap: log(ppl forget / ppl approximate), "
                   "0 = looks unseen; collapsed: predicts a uniform distribution on held-out text, so its AUC and gap "
                   "say nothing about forgetting")


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
    widths = [16, 9, 9, 9, 9, 9, 8, 8]
    lines = [UNLEARNING_HEADER[0].ljust(16) + "".join(h.rjust(w) for h, w in zip(UNLEARNING_HEADER[1:], widths[1:],
                                                                                    strict=True))]
    lines += [row[0].ljust(16) + "".join(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
              for row in unlearning_rows(rows)]
    lines.append(UNLEARNING_NOTE)
    if blind is not None:
        from lethe.attacks.blind import describe

        lines.append(describe(blind))
    return "\n".join(lines)
