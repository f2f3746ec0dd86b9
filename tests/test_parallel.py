"""`--jobs`: a stage's independent tasks give their results in task order, and each finished one is logged with the
stage's count, so a study of hours run in the background says where it is."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path

import pytest

from lethe.errors import explain
from lethe.parallel import _Progress, run_tasks


def _progress(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "lethe"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_come_in_task_order_and_each_finished_task_is_counted(jobs, caplog):
    tasks = {"two to the tenth": (pow, (2, 10)), "largest": (max, ([3, 9, 4],)), "letters": (sorted, ("cab",))}
    with caplog.at_level(logging.INFO, logger="lethe"):
        results = run_tasks(tasks, jobs, "squares")
    assert results == [1024, 9, ["a", "b", "c"]]
    lines = _progress(caplog)
    assert [int(re.match(r"squares: (\d) of 3 done", line)[1]) for line in lines] == [1, 2, 3]
    assert sorted(re.search(r"done \((.+), \d+ s\)", line)[1] for line in lines) == \
        ["largest", "letters", "two to the tenth"]
    assert "left" not in lines[2]


def test_the_time_left_is_the_mean_so_far_times_the_tasks_left_over_the_workers(caplog):
    progress = _Progress("fine-tunes", ["victim", "reference 0", "reference 1", "reference 2"], workers=2)
    with caplog.at_level(logging.INFO, logger="lethe"):
        progress.finished(1, 600)  # 3 left, 2 at a time: 600 × 3 / 2
        progress.finished(0, 0.2)  # read back by --resume: the mean falls to 300 s, 2 left
        progress.finished(3, 0.1)
        progress.finished(2, 0.1)
    assert _progress(caplog) == ["fine-tunes: 1 of 4 done (reference 0, 10 min); about 15 min left",
                                 "fine-tunes: 2 of 4 done (victim, 0 s); about 5 min left",
                                 "fine-tunes: 3 of 4 done (reference 2, 0 s); about 3 min left",
                                 "fine-tunes: 4 of 4 done (reference 1, 0 s)"]


def test_a_stage_without_a_name_counts_its_tasks_and_any_callable_is_a_task(caplog):
    with caplog.at_level(logging.INFO, logger="lethe"):
        assert run_tasks({"absolute": (abs, (-3,))}, 1) == [3]
        assert run_tasks({"two cubed": (partial(pow, 2), (3,))}, 1, "powers") == [8]
    assert _progress(caplog) == ["tasks: 1 of 1 done (absolute, 0 s)", "powers: 1 of 1 done (two cubed, 0 s)"]


def test_a_failed_task_stops_the_stage_at_once_and_starts_nothing_queued(tmp_path):
    """The failing task ends the stage: the one running beside it is interrupted (its two-minute sleep, a run),
    and the tasks queued behind them never start, instead of the whole queue running before the error shows."""
    started = time.monotonic()
    queued = [tmp_path / f"queued-{k}" for k in range(6)]
    with pytest.raises(ValueError, match="invalid literal"):
        run_tasks({"sleep": (time.sleep, (120,)), "bad number": (int, ("not a number",)),
                   **{path.name: (Path.touch, (path,)) for path in queued}}, 2)
    assert time.monotonic() - started < 60  # interrupted, not slept out
    assert not any(path.exists() for path in queued)


STUDY = """
import signal, sys, time
from lethe.errors import explain
from lethe.parallel import run_tasks

def stop_gracefully(signum, frame):  # as the command line does
    raise KeyboardInterrupt

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_gracefully)
    print("started", flush=True)
    try:
        run_tasks({f"sleep {k}": (time.sleep, (120,)) for k in range(5)}, 2)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def test_a_terminated_study_interrupts_its_children_instead_of_running_its_queue(tmp_path):
    """SIGTERM (a scheduler pre-empting the job) reaches the parent only: it must stop the tasks under way
    and drop the queued ones, where a process pool's shutdown would otherwise run the whole queue first."""
    script = tmp_path / "study.py"
    script.write_text(STUDY)
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert process.stdout.readline().strip() == "started"
    time.sleep(5)  # the children start (or, on a slow machine, start after the stop and skip their task)
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=60)  # its queue would take 6 minutes
    finally:
        process.kill()
    assert output.strip() == "interrupted" and process.returncode == 0


def test_a_child_killed_from_outside_ends_in_one_line_that_says_to_resume():
    with pytest.raises(BrokenProcessPool) as died:
        run_tasks({"killed": (os._exit, (137,)), "absolute": (abs, (-1,))}, 2)  # as the OOM killer would end it
    assert "continue with --resume" in explain(died.value)
