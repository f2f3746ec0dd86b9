"""Who holds a run directory: run.lock names the process writing it, and no other run writes there until that
process is gone.

A process is named by more than its pid: pids are reused, and a container or a pre-empted job restarted on another
node often keeps the hostname (every session of this project's VM is `vm`), so a lock whose pid now belongs to some
other process would hold the directory forever. The lock also records the machine's boot id and the process's start
time (Linux); a lock from another boot, or whose pid started at another time, is stale."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK = "run.lock"


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields from the third (state) on, or None where unreadable (not Linux, or gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> int | None:
    """The process's start time, in clock ticks after boot (field 22 of /proc/PID/stat), or None where unknown."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def lock_record(command: str) -> dict:
    """What run.lock says of this process."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "boot": _boot_id(),
            "process_start": _process_start(os.getpid()), "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv}


def _same_process(owner: dict) -> bool:
    """Whether the lock's pid is still the process that wrote it (a lock without boot id or start time: whether
    that pid is alive)."""
    pid = owner["pid"]
    if owner.get("boot") is not None and owner["boot"] != _boot_id():
        return False  # written before this machine booted
    if not _process_alive(pid):
        return False
    started = owner.get("process_start")
    return started is None or _process_start(pid) in (None, started)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    fields = _stat(pid)  # a killed process its parent has not reaped yet is a zombie: gone for our purposes
    return not fields or fields[0] != "Z"


def lock_owner(path: Path) -> dict | None:
    """Who holds the run directory `path` now, or None when nobody does (no lock, or its process is gone)."""
    try:
        owner = json.loads((path / LOCK).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return {"pid": None, "host": None, "command": "?", "started": "?"}  # unreadable: someone is writing it
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return owner if _same_process(owner) else None
    return owner  # another machine's process: cannot tell, so it holds the directory


def describe_owner(owner: dict) -> str:
    if owner.get("pid") is None:
        return f"an unknown process (its {LOCK} cannot be read; delete it if nothing writes there)"
    where = f"pid {owner.get('pid')} on {owner.get('host')}"
    return f"`lethe {owner.get('command')}` ({where}, since {owner.get('started')})"
