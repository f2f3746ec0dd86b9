"""run.lock: a directory is held while the process that wrote the lock lives, and only that process. A pid reused
by another process, or a lock from before the machine booted (a container restarted with the same hostname),
must not hold a run directory forever."""

from __future__ import annotations

import json
import os
import socket

from lethe.run_lock import LOCK, lock_owner, lock_record


def write_lock(path, **changes) -> dict:
    owner = lock_record("experiment leakage") | changes
    (path / LOCK).write_text(json.dumps(owner))
    return owner


def test_the_process_that_wrote_the_lock_holds_the_directory(tmp_path):
    owner = write_lock(tmp_path)
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    assert owner["boot"] and isinstance(owner["process_start"], int)  # Linux: both known
    assert lock_owner(tmp_path) == owner


def test_a_pid_now_used_by_another_process_does_not_hold_it(tmp_path):
    """The pid is alive (it is this test's), but it started at another time: the lock's writer is gone."""
    owner = lock_record("target")
    write_lock(tmp_path, process_start=owner["process_start"] - 1)
    assert lock_owner(tmp_path) is None


def test_a_lock_from_before_this_boot_does_not_hold_it(tmp_path):
    write_lock(tmp_path, boot="00000000-0000-0000-0000-000000000000")
    assert lock_owner(tmp_path) is None


def test_a_lock_without_boot_or_start_time_is_judged_by_its_pid_alone(tmp_path):
    """Locks written before Lethe recorded them: a live pid still holds the directory, a dead one does not."""
    owner = write_lock(tmp_path, boot=None, process_start=None)
    assert lock_owner(tmp_path) == owner
    write_lock(tmp_path, boot=None, process_start=None, pid=2**22 + 1)  # above Linux's largest pid
    assert lock_owner(tmp_path) is None


def test_another_hosts_lock_holds_it_since_nothing_here_can_tell(tmp_path):
    owner = write_lock(tmp_path, host="another-node", boot="00000000-0000-0000-0000-000000000000")
    assert lock_owner(tmp_path) == owner


def test_a_command_takes_over_a_reused_pids_lock_and_says_how_to_free_another_hosts(micro_run, data_dir, tmp_path,
                                                                                     capsys):
    from lethe.cli import main

    out = tmp_path / "ppl"
    command = ["eval", "ppl", "--model", str(micro_run), "--data", str(data_dir), "--out", str(out),
               "--splits", "code/forget", "--overwrite"]
    assert main(command) == 0
    write_lock(out, host="another-node")
    assert main(command) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is being written by `lethe experiment leakage` (pid" in error
    assert f"if it is gone, delete {out / LOCK}" in error
    write_lock(out, process_start=lock_record("target")["process_start"] - 1)  # this pid, another start
    assert main(command) == 0 and not (out / LOCK).exists()
    assert json.loads((out / "run.json").read_text())["status"] == "done"
