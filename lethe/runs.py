"""Run directories: everything needed to rebuild a number without rerunning a model.

Layout: run.json (command, status), config.yaml (resolved), env.json, data_hashes.json, log.txt,
scores/ (per-sample), results.json (aggregate, written last), plus model/ or plots/ as produced.

A run owns its directory while it writes: run.lock names the process, and no other run writes
there until that process is gone. A run writes only inside its directory (lethe/run_paths.py), never
inside a directory it reads from. `--overwrite` moves the old run aside and deletes it only once the
new one finishes; a new run that fails before it trained is removed and the old one put back, and one
that fails after (a checkpoint to resume from, or the last good weights of a diverged run) stays,
marked failed, with the old run kept aside where its record and the error say.
Every JSON file is strict: a number that is not finite is written as null (results.json says why).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from lethe.config import config_changes, to_yaml
from lethe.environment import environment
from lethe.errors import LetheError
from lethe.processes import from_main_process, is_main_process
from lethe.run_lock import LOCK, describe_owner, lock_owner, lock_record
from lethe.run_paths import OPEN_RUNS, confined, refuse_nesting

log = logging.getLogger("lethe")

def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def finite_or_null(payload: Any, where: str = "") -> tuple[Any, dict[str, str]]:
    """`payload` with every NaN or infinite float replaced by None, and where each was (dotted key → its value)."""
    if isinstance(payload, float) and not math.isfinite(payload):
        return None, {where: str(payload)}
    nulls: dict[str, str] = {}
    if isinstance(payload, dict):
        clean = {}
        for key, value in payload.items():
            clean[key], found = finite_or_null(value, f"{where}.{key}" if where else str(key))
            nulls |= found
        return clean, nulls
    if isinstance(payload, list | tuple):
        clean_items = []
        for index, value in enumerate(payload):
            item, found = finite_or_null(value, f"{where}[{index}]")
            clean_items.append(item)
            nulls |= found
        return clean_items, nulls
    return payload, nulls


def write_json(path: Path, payload: Any) -> None:
    """Write atomically so a crash never leaves half a results file behind; strict JSON (non-finite → null), and
    only inside the open run's directory."""
    path = confined(path)
    payload, _ = finite_or_null(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it private; the file is as readable as any other the run writes
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str, allow_nan=False)
        handle.write("\n")
    os.replace(tmp, path)


def finished(path: Path) -> bool:
    """Whether `path` holds a run that finished (a resumed study reads such a step back instead of redoing it)."""
    return (path / "run.json").is_file() and read_json(path / "run.json").get("status") == "done"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LetheError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise LetheError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _RunLog(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        """A log line that cannot be written (a full disk) is dropped: the terminal gets no logging traceback, and
        the run's status and error still say what happened."""


def open_run() -> Run | None:
    """The innermost run this process has open (a study's cell inside the study), if any."""
    return OPEN_RUNS[-1] if OPEN_RUNS else None


def note_environment(key: str, entries: dict) -> None:
    """Add what is learnt after a run started (the commit a Hub name resolved to) to env.json[key] of every run
    this process has open."""
    for run in OPEN_RUNS:
        target = run.path / "env.json"
        if run.main_process and target.is_file():
            env = read_json(target)
            env.setdefault(key, {}).update(entries)
            write_json(target, env)


class Run:
    """One command's output directory."""

    def __init__(self, path: Path, command: str, main_process: bool = True) -> None:
        self.path = path
        self.command = command
        self.main_process = main_process  # only one process of a distributed run writes the record
        self.resumed = False
        self.accept_data_change = False
        self._replaced: Path | None = None  # the old run --overwrite moved aside, until this one commits
        self._locked = False
        self._log_handler: logging.Handler | None = None

    @property
    def scores_dir(self) -> Path:
        return self.path / "scores"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @classmethod
    def start(cls, out: Path, command: str, config: BaseModel, *, overwrite: bool = False,
              resume: bool = False, seed: int | None = None, accept_data_change: bool = False) -> Run:
        """Claims `out` and writes the record; under `accelerate launch` the main process does, and the
        others wait until it has, then fail with it if it refused (rather than wait for it forever)."""
        if accept_data_change and not resume:
            raise LetheError("--accept-data-change applies to a resumed run only: add --resume, or drop it")
        run = cls(Path(out), command, is_main_process())
        run.resumed, run.accept_data_change = resume, accept_data_change
        refusal = None
        if run.main_process:
            try:
                refuse_nesting(run.path, config)
                run._claim(config, overwrite=overwrite, resume=resume)
            except LetheError as exc:
                refusal = str(exc)
                run._unlock()
            else:
                OPEN_RUNS.append(run)
                confined(run.path / "config.yaml").write_text(to_yaml(config))
                write_json(run.path / "env.json", environment(seed))
                now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                info = {"command": command, "status": "running", "started": now}
                if resume:  # the record of the run so far stays, with the time it was continued
                    info = run._info() | {"status": "running"}
                    info.setdefault("resumed", []).append(now)
                    info.pop("finished", None), info.pop("error", None)
                if run._replaced is not None:
                    info["replacing"] = run._replaced.name
                write_json(run.path / "run.json", info)
                run._attach_log()
        if refusal := from_main_process(refusal):
            raise LetheError(refusal)
        return run

    def _info(self) -> dict:
        path = self.path / "run.json"
        return read_json(path) if path.is_file() else {}

    def _claim(self, config: BaseModel, *, overwrite: bool, resume: bool) -> None:
        """Refuse, resume, or take the directory: always under this process's lock."""
        if self.path.exists() and not self.path.is_dir():
            raise LetheError(f"--out {self.path} is a file, not a directory")
        if self.path.exists() and (owner := lock_owner(self.path)) is not None:
            elsewhere = owner.get("host") not in (None, socket.gethostname())
            raise LetheError(f"{self.path} is being written by {describe_owner(owner)}; wait for it to finish "
                             "or stop it first" + (f" (if it is gone, delete {self.path / LOCK}: from here Lethe "
                                                   "cannot tell)" if elsewhere else ""))
        if not self.path.exists() or not any(p.name != LOCK for p in self.path.iterdir()):
            if resume:
                raise LetheError(f"nothing to resume: {self.path} holds no run")
            self._lock()
            return
        if not (self.path / "run.json").is_file():
            raise LetheError(f"{self.path} is not empty and holds no Lethe run; refusing to write into it")
        info = read_json(self.path / "run.json")
        status, command = info.get("status"), info.get("command")
        if resume:
            if command != self.command:
                raise LetheError(f"{self.path} holds a `lethe {command}` run, not `lethe {self.command}`")
            if status == "done":
                raise LetheError(f"the run in {self.path} already finished; nothing to resume")
            saved = self.path / "config.yaml"
            if saved.is_file() and (changed := config_changes(yaml.safe_load(saved.read_text()), config)):
                raise LetheError(f"the config differs from the one {self.path} was started with ({changed}); "
                                 f"resume with --config {saved}")
            self._lock()
            self._replaced = self._aside(info)
            return
        if overwrite:
            self._lock()
            self._move_aside(info)
            return
        kept = self._aside(info)
        replacing = f" (the run it was to replace is kept in {kept})" if kept else ""
        if status != "done":
            raise LetheError(f"{self.path} holds an unfinished `lethe {command}` run ({status}){replacing}; continue "
                             "it with --resume where the command offers it, or start again with --overwrite")
        raise LetheError(f"{self.path} already holds a `lethe {command}` run ({status}); choose another "
                         "--out or pass --overwrite")

    def _lock(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK
        if lock_owner(self.path) is None:  # a stale lock: its process is gone
            lock.unlink(missing_ok=True)
        owner = lock_record(self.command)
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            raise LetheError(f"{self.path} was claimed by {describe_owner(lock_owner(self.path) or {})} "
                             "a moment ago") from None
        with os.fdopen(fd, "w") as handle:
            json.dump(owner, handle)
        self._locked = True

    def _aside(self, info: dict) -> Path | None:
        """The old run an uncommitted --overwrite moved aside, if it is still there."""
        name = info.get("replacing")
        return self.path.parent / name if name and (self.path.parent / name).is_dir() else None

    def _move_aside(self, info: dict) -> None:
        """--overwrite: keep the old run next to the new one until the new one commits."""
        earlier = self._aside(info)
        if earlier is not None:  # this directory is itself an uncommitted replacement: the old run stays aside
            for item in self.path.iterdir():
                if item.name != LOCK:
                    shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
            self._replaced = earlier
            return
        aside = self.path.parent / f".{self.path.name}.replaced"
        if aside.exists():
            raise LetheError(f"{aside} is left over from an earlier --overwrite of {self.path}; move it back or "
                             "delete it")
        os.rename(self.path, aside)
        (aside / LOCK).unlink(missing_ok=True)
        self._locked = False
        self._lock()
        self._replaced = aside

    def commit(self) -> None:
        """The new run has finished: the run it replaces goes now."""
        if not self.main_process or self._replaced is None:
            return
        shutil.rmtree(self._replaced, ignore_errors=True)
        log.debug("the run this one replaces (moved to %s) is deleted", self._replaced)
        self._replaced = None
        info = self._info()
        if info.pop("replacing", None) is not None:
            write_json(self.path / "run.json", info)

    def _restore(self) -> None:
        """A replacement that failed before it trained: the old run goes back where it was."""
        self._close_log()
        shutil.rmtree(self.path)
        os.rename(self._replaced, self.path)
        log.debug("the new run in %s stopped before it trained; the run it was to replace is restored", self.path)
        self._replaced, self._locked = None, False

    def _has_trained(self) -> bool:
        """Training left weights on disk: a whole checkpoint to resume from, or the last good weights of a diverged run
        (a checkpoint cut short by a full disk is neither)."""
        return (any(self.checkpoints_dir.glob("step-*/trainer_state.json"))
                or (self.checkpoints_dir / "last-good" / "model.safetensors").is_file())

    def _attach_log(self) -> None:
        handler = _RunLog(self.path / "log.txt")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        self._log_handler = handler

    def record_data(self, files: dict[str, Path]) -> None:
        """sha256 of every data file read; a resumed run refuses data that changed since it started (every process
        of a distributed run calls this, and all of them refuse together)."""
        refusal = None
        if self.main_process:
            try:
                self._record_data(files)
            except LetheError as exc:
                refusal = str(exc)
        if refusal := from_main_process(refusal):
            raise LetheError(refusal)

    def _record_data(self, files: dict[str, Path]) -> None:
        target = self.path / "data_hashes.json"
        hashes = {name: {"path": str(path), "sha256": sha256_file(path)} for name, path in files.items()}
        recorded = read_json(target) if self.resumed and target.is_file() else {}
        changed = sorted(name for name in {*recorded, *hashes}
                         if recorded and recorded.get(name, {}).get("sha256") != hashes.get(name, {}).get("sha256"))
        if changed and not self.accept_data_change:
            raise LetheError(f"the data changed since {self.path} started ({', '.join(changed)}); resuming would "
                             "train on two datasets; restore the data, or pass --accept-data-change to continue "
                             "on the new data (recorded in the run)")
        if changed:
            log.warning("resuming on changed data (%s), as --accept-data-change asks", ", ".join(changed))
            for name in changed:
                hashes.setdefault(name, {"path": None, "sha256": None})["before_resume"] = recorded.get(name)
            info = self._info()
            info.setdefault("data_changed_on_resume", []).append(
                {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "splits": changed})
            write_json(self.path / "run.json", info)
        write_json(target, hashes)

    def write_results(self, results: dict[str, Any]) -> Path:
        """results.json, strict: a number that cannot be computed (NaN, infinite) is null, and `null_reasons` says
        what it was."""
        target = self.path / "results.json"
        if self.main_process:
            results, nulls = finite_or_null(results)
            if nulls:
                results["null_reasons"] = {key: f"not a finite number ({value})" for key, value in nulls.items()}
            write_json(target, results)
        return target

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        if kind is None:
            self.close("done")
        elif issubclass(kind, KeyboardInterrupt):
            self.close("interrupted", error="interrupted")
        else:
            self.close("failed", error=str(exc) or kind.__name__)

    def close(self, status: str, error: str | None = None) -> None:
        if self in OPEN_RUNS:
            OPEN_RUNS.remove(self)
        if self.main_process and self._replaced is not None:
            if status == "done":
                self.commit()
            elif not self._has_trained():
                self._restore()
                return
            else:  # trained weights worth resuming from: both runs stay until one of them is chosen
                log.warning("the run this one was to replace is kept in %s until this one finishes; delete it, or "
                            "move it back over %s", self._replaced, self.path)
        if self.main_process and (self.path / "run.json").is_file():
            self._record_end(status, error)
        self._close_log()
        self._unlock()

    def _record_end(self, status: str, error: str | None) -> None:
        """The final status in run.json; on a full disk, written over the file's own bytes, so a run that failed
        never reads `running`."""
        path = self.path / "run.json"
        info = read_json(path) | {"status": status, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if error:
            info["error"] = error
        try:
            write_json(path, info)
        except OSError:
            size = path.stat().st_size
            brief = {key: info[key] for key in ("command", "status", "replacing") if key in info}
            brief["error"] = error or ""
            while len(text := json.dumps(brief).encode()) > size and brief["error"]:
                brief["error"] = brief["error"][: len(brief["error"]) // 2]
            with path.open("r+b") as handle:
                handle.write(text + b" " * (size - len(text)))

    def _unlock(self) -> None:
        if self._locked:
            (self.path / LOCK).unlink(missing_ok=True)
            self._locked = False

    def _close_log(self) -> None:
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
