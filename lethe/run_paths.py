"""Where a run may write: names from a config that become paths, the bounds of the run directory, and
the directories a command reads from, which it never writes into."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lethe.errors import LetheError

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# what a run directory holds beside a name's folder, and names Windows refuses for any file
RESERVED = {"scores", "checkpoints", "model", "plots", "tokenizer", "runs", "cells", "retrain", "original",
            "con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}

OPEN_RUNS: list = []  # this process's open runs (lethe.runs.Run), innermost last; every write lands inside one


def check_name(name: Any, what: str) -> str:
    """`name` as one plain path component: letters, digits, `_` and `-`, not a reserved name."""
    if not isinstance(name, str) or not _PLAIN.fullmatch(name) or len(name) > 64:
        raise ValueError(f"{what} {name!r} must be a plain name (letters, digits, _ and -, starting with a letter "
                         "or digit, at most 64 characters): it names a folder")
    if name.lower() in RESERVED:
        raise ValueError(f"{what} {name!r} is a reserved name (a run's own folder, or a device name); choose another")
    return name


def check_names(names: Iterable[Any], what: str) -> list[str]:
    """Each of `names` plain (check_name), and no two the same folder (case-insensitive file systems included)."""
    names = list(names)
    for name in names:
        check_name(name, what)
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise ValueError(f"{what} {name!r} is given twice")
        seen.add(name.lower())
    return names


def confined(path: Path) -> Path:
    """`path`, refused when this process has a run open and `path` lies outside every open run's directory:
    whatever a config names, a run writes only inside its --out."""
    if not OPEN_RUNS:
        return path
    resolved = Path(os.path.abspath(path)).resolve()
    if any(resolved.is_relative_to(run.path.resolve()) for run in OPEN_RUNS):
        return path
    raise LetheError(f"refusing to write {path}: it is outside the run directory {OPEN_RUNS[-1].path}")


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            if name != "out":  # where `data build` and `data pii` write: the run directory itself
                yield from _leaves(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, str | Path) and str(value) not in ("", "."):
        yield Path(value)


def input_paths(config: BaseModel) -> list[Path]:
    """Existing files and directories the config names: models, data, document files."""
    found = []
    for path in _leaves(config):
        try:
            if path.exists():
                found.append(path)
        except OSError:  # a name too long or unreadable is no input this check can see
            continue
    return found


def refuse_nesting(out: Path, config: BaseModel) -> None:
    """No run inside a directory the command reads (its model, its data), nor over one (with --overwrite, the
    input would be moved aside with the old run)."""
    where = out.resolve()
    for path in input_paths(config):
        source = path.resolve()
        if source == where:
            raise LetheError(f"--out {out} is {path}, which this command reads; choose another --out")
        if source.is_dir() and where.is_relative_to(source):
            raise LetheError(f"--out {out} is inside {path}, which this command reads; choose an --out outside it")
        if source.is_relative_to(where):
            raise LetheError(f"{path}, which this command reads, is inside --out {out}; choose another --out")
