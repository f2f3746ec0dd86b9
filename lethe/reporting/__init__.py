"""`lethe report`: an HTML page and its markdown twin from run directories, read back without rerunning a model."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from lethe.errors import LetheError
from lethe.reporting.document import Section, Table
from lethe.reporting.html import render_html
from lethe.reporting.markdown import render_markdown
from lethe.reporting.records import load_run
from lethe.reporting.sections import build_section

FIGURES = "report_figures"


def _flatten(sections: list[Section], depth: int = 0) -> Iterable[tuple[int, Section]]:
    for section in sections:
        yield depth, section
        yield from _flatten(section.children, depth + 1)


def _overview(sections: list[Section]) -> Table:
    rows = [["  " * depth + str(s.run.path if depth == 0 else s.run.path.name), s.run.command, s.run.status,
             s.headline] for depth, s in _flatten(sections)]
    return Table(["run", "command", "status", "headline"], rows, "runs in this report")


def report_dir(paths: list[Path], out: Path | None) -> Path:
    if out is not None:
        return Path(out)
    if len(paths) == 1:
        return Path(paths[0])
    raise LetheError("several runs need --out: the directory to write report.html and report.md into")


def write_report(paths, out=None, *, overwrite: bool = False) -> Path:
    """Report the run directories `paths` into `out` (default: the single run's own directory); returns the HTML.
    An existing report there (or a file of the same name) is replaced only with `overwrite`."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, str | Path) else paths)]
    if not paths:
        raise LetheError("give at least one run directory to report")
    sections = [build_section(load_run(path)) for path in paths]
    out = report_dir(paths, out)
    if out.exists() and not out.is_dir():
        raise LetheError(f"--out {out} is a file, not a directory")
    existing = [name for name in ("report.html", "report.md") if (out / name).exists()]
    if existing and not overwrite:
        raise LetheError(f"{out} already holds {' and '.join(existing)}; choose another --out or pass --overwrite")
    figures_dir = out / FIGURES
    figures_dir.mkdir(parents=True, exist_ok=True)
    for stale in figures_dir.glob("*.png"):  # only this report's own figures live here
        stale.unlink()
    names = {}
    for number, figure in enumerate((f for _, s in _flatten(sections) for f in s.figures), start=1):
        name = f"{FIGURES}/{number:02d}-{figure.name}"
        (out / name).write_bytes(figure.png)
        names[id(figure)] = name
    generated = time.strftime("%Y-%m-%d %H:%M:%S %z")
    overview = _overview(sections)
    (out / "report.md").write_text(render_markdown(sections, overview, generated, names))
    html = out / "report.html"
    html.write_text(render_html(sections, overview, generated))
    return html


__all__ = ["write_report"]
