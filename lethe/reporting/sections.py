"""One section per run, built by its command's recipe (run.json's "command" names it; `lethe.recipes`)."""

from __future__ import annotations

import logging
import math

from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord

log = logging.getLogger("lethe")


def fmt(value, digits: int = 3) -> str:
    """A cell: floats rounded, ints with separators, missing values as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e6 or (value and abs(value) < 10 ** -digits):
        return f"{value:.{digits}g}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def key_values(pairs: dict, caption: str = "") -> Table:
    return Table(header=["quantity", "value"], rows=[[k, fmt(v)] for k, v in pairs.items()], caption=caption)


def headline_scalars(results: dict, limit: int = 40) -> dict[str, object]:
    """Scalar leaves of results.json up to three levels deep: what an unknown command's section can show."""
    found: dict[str, object] = {}

    def walk(node, prefix: str, depth: int) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict) and depth < 3:
                walk(value, f"{name}.", depth + 1)
            elif isinstance(value, int | float | str | bool) and len(found) < limit:
                found[name] = value
    walk(results, "", 1)
    return found


def saved_figures(record: RunRecord, section: Section, names: list[str], caption: str) -> None:
    """The PNGs a run saved, by name; a missing one is said, not skipped."""
    from lethe.reporting.plots import saved_png

    for name in names:
        figure = saved_png(record.path / name, f"{name}: {caption}")
        section.add(figure) if figure else section.notes.append(f"{name} is missing from the run directory")


def generic(record: RunRecord, section: Section) -> None:
    """Any command: the headline scalars of results.json and whatever PNGs the run saved."""
    from lethe.reporting.plots import saved_png
    section.tables.append(key_values(headline_scalars(record.results), "headline numbers from results.json"))
    for folder in (record.path, record.path / "plots"):
        for png in sorted(folder.glob("*.png")):
            section.add(saved_png(png, f"{png.relative_to(record.path)}, as the run saved it"))


def build_section(record: RunRecord, depth: int = 0) -> Section:
    from lethe.recipes import load_recipes
    from lethe.reporting.plots import loss_curve

    section = Section(run=record, title=f"{record.command}: {record.path.name}")
    recipes = load_recipes()
    recipe = recipes.get(record.command) if record.command in recipes else None
    build = recipe.report if recipe is not None and recipe.report is not None else generic
    summarises_children = recipe is not None and recipe.summarises_children
    section.notes += record.warnings
    hub = (record.json("env.json") or {}).get("hub") or {}
    section.notes += [f"Hugging Face Hub: {name} at commit {entry.get('commit')}" for name, entry in hub.items()]
    if record.results is not None:
        try:
            build(record, section)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            # an older or partial results.json: show what it holds rather than nothing
            log.warning("%s: results.json lacks what the %s section expects (%s: %s); showing its raw numbers",
                        record.path, record.command, type(exc).__name__, exc)
            section.notes.append(f"results.json lacks what this section expects ({type(exc).__name__}: {exc}); "
                                 "showing its headline numbers")
            section.tables, section.figures, section.text = [], [], []
            generic(record, section)
        history = (record.results.get("train") or {}).get("history") if isinstance(record.results, dict) else None
        if history:
            section.add(loss_curve(history, f"{record.command} {record.path.name}"))
    if record.children and summarises_children:
        section.sub_runs = Table(header=["sub-run", "command", "status", "headline"],
                                 rows=[[str(c.path.relative_to(record.path)), c.command, c.status,
                                        build_section(c, depth + 1).headline] for c in record.children],
                                 caption="runs this study made; their numbers are summarised above")
    else:
        section.children = [build_section(child, depth + 1) for child in record.children]
    if not section.headline:
        section.headline = record.status if record.results is None else "–"
    return section

