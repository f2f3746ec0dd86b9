"""Who holds a run directory: run.lock names the process writing it, and no other run writes there until that
process is gone."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

LOCK = "run.lock"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a killed process its parent has not reaped yet is a zombie: gone for our purposes
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def lock_owner(path: Path) -> dict | None:
    """Who holds the run directory `path` now, or None when nobody does (no lock, or its process is gone)."""
    try:
        owner = json.loads((path / LOCK).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return {"pid": None, "host": None, "command": "?", "started": "?"}  # unreadable: someone is writing it
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return owner if _process_alive(owner["pid"]) else None
    return owner  # another machine's process: cannot tell, so it holds the directory


def describe_owner(owner: dict) -> str:
    if owner.get("pid") is None:
        return f"an unknown process (its {LOCK} cannot be read; delete it if nothing writes there)"
    where = f"pid {owner.get('pid')} on {owner.get('host')}"
    return f"`lethe {owner.get('command')}` ({where}, since {owner.get('started')})"
