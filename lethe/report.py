"""Plain-text tables for the terminal and markdown."""

from __future__ import annotations

SPLIT_ORDER = ("forget", "retain", "approximate", "eval")


def _domains_and_splits(names) -> tuple[list[str], list[str]]:
    domains = list(dict.fromkeys(name.split("/")[0] for name in names))
    present = {name.split("/")[1] for name in names}
    splits = [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))
    return domains, splits


def format_ppl_table(ppl: dict[str, float]) -> str:
    """Domains as rows, splits as columns: members (forget, retain) should sit below approximate."""
    domains, splits = _domains_and_splits(ppl)
    lines = ["perplexity".ljust(12) + "".join(s.rjust(13) for s in splits)]
    for domain in domains:
        cells = [f"{ppl[f'{domain}/{s}']:.2f}" if f"{domain}/{s}" in ppl else "-" for s in splits]
        lines.append(domain.ljust(12) + "".join(c.rjust(13) for c in cells))
    return "\n".join(lines)


def format_split_table(results: dict) -> str:
    header = f"{'split':<22}{'documents':>10}{'characters':>12}{'tokens':>10}"
    rows = [f"{name:<22}{row['documents']:>10,}{row['characters']:>12,}{row['tokens']:>10,}"
            for name, row in results["splits"].items()]
    dropped = results["dropped"]
    footer = (f"tokens counted with {results['tokenizer']}; dropped {dropped['exact_duplicates']} exact and "
              f"{dropped['near_duplicates']} near duplicates")
    return "\n".join([header, *rows, footer])


def format_unlearning_table(rows: dict[str, dict]) -> str:
    """One row per model: perplexity per role, Min-K% AUC, and the approximate-retraining gap."""
    header = (f"{'model':<16}{'forget':>9}{'retain':>9}{'approx':>9}{'general':>9}"
              f"{'MIA AUC':>9}{'folded':>8}{'gap':>8}")
    lines = [header]
    for name, m in rows.items():
        ppl = m["ppl"]
        lines.append(f"{name:<16}{ppl['forget']:>9.2f}{ppl['retain']:>9.2f}{ppl['approximate']:>9.2f}"
                     f"{ppl['general']:>9.2f}{m['mia']['auc']:>9.3f}{m['mia']['auc_folded']:>8.3f}"
                     f"{m['approx_gap']['log_ppl_ratio']:>8.3f}")
    lines.append("perplexity per role; MIA: Min-K% forget vs approximate; gap: log(ppl forget / ppl approximate), "
                 "0 = looks unseen")
    return "\n".join(lines)
