"""What a run directory saved, read back without touching a model."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lethe.errors import LetheError
from lethe.runs import read_json

log = logging.getLogger("lethe")

# folders that hold weights or arrays, never a sub-run: skipping them keeps the walk fast on big runs
NOT_RUNS = {"model", "scores", "checkpoints", "tokenizer", "plots", "utility_tasks"}


@dataclass
class RunRecord:
    path: Path
    command: str
    status: str
    info: dict[str, Any]
    results: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)
    children: list[RunRecord] = field(default_factory=list)

    def text(self, name: str) -> str | None:
        path = self.path / name
        return path.read_text(errors="replace") if path.is_file() else None

    def json(self, name: str) -> Any:
        path = self.path / name
        return read_json(path) if path.is_file() else None


def is_run_dir(path: Path) -> bool:
    return (path / "run.json").is_file()


def sub_run_dirs(path: Path) -> list[Path]:
    """The run directories below `path`, nearest first: a sub-run's own sub-runs belong to it."""
    found = []
    for root, dirs, _ in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in NOT_RUNS and not d.startswith("."))
        if Path(root) != path and is_run_dir(Path(root)):
            found.append(Path(root))
            dirs[:] = []
    return found


def load_run(path: Path) -> RunRecord:
    path = Path(path)
    if not path.is_dir():
        raise LetheError(f"{path} is not a directory; `lethe report` takes run directories")
    if not is_run_dir(path):
        raise LetheError(f"{path} is not a Lethe run directory (it has no run.json)")
    info = read_json(path / "run.json")
    if not isinstance(info, dict) or "command" not in info:
        raise LetheError(f"{path / 'run.json'} names no command; is this a Lethe run directory?")
    record = RunRecord(path=path, command=str(info["command"]), status=str(info.get("status", "unknown")),
                       info=info, results=None)
    if record.status != "done":
        reason = f": {info['error']}" if info.get("error") else ""
        record.warnings.append(f"the run is {record.status}{reason}; reporting only what it saved")
    if (path / "results.json").is_file():
        record.results = read_json(path / "results.json")
    else:
        record.warnings.append("results.json is missing: the run saved no results")
    for warning in record.warnings:
        log.warning("%s: %s", path, warning)
    # in the order they ran (ISO timestamps sort as text), which is the order a study or the demo reads in
    record.children = sorted((load_run(child) for child in sub_run_dirs(path)),
                             key=lambda child: str(child.info.get("started", "")))
    return record
