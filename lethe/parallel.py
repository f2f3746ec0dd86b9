"""`--jobs N`: a study's independent runs (releases, fine-tunes, attacked cells, unlearning runs, shadows) N at a time,
in processes.

Each child runs with one thread (OMP_NUM_THREADS=1 and torch.set_num_threads(1)): N processes of one
thread share a CPU's cores without oversubscribing them. Where there are several GPUs, each child
takes one (CUDA_VISIBLE_DEVICES), dealt round robin. A task is one Lethe run directory, read back when
it finished, so an interrupted study resumes task by task as it does run by run. Each finished task is logged with
the stage's count and the time left at its pace, into the study's log.txt as well: a study of hours, run in the
background, says where it is.

A stage stops at once, not after its queue: when a task fails, or the study is interrupted (Ctrl-C, or SIGTERM from a
scheduler), the tasks not started are dropped and each child is sent one SIGTERM, which interrupts its run as Ctrl-C
would (the run is marked interrupted and resumes from its checkpoint). Children ignore the terminal's SIGINT, so that
a run's cleanup is never interrupted twice.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

Task = tuple[Callable[..., Any], tuple]
log = logging.getLogger("lethe")


def _devices() -> list[str]:
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


# set in each child by _start_child: the stage's stop flag, and whether a task is running now
_stopping = None
_task_running = False


def _interrupt_task(signum, frame) -> None:
    if _task_running:
        raise KeyboardInterrupt
    os._exit(128 + signum)  # between tasks there is nothing to close: an idle (or orphaned) child just ends


def _start_child(devices, stopping) -> None:
    global _stopping
    _stopping = stopping
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides, and tells each child once (SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt_task)
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices.get()
    import torch

    torch.set_num_threads(1)


@contextlib.contextmanager
def _one_thread_each() -> Iterator[None]:
    """Children inherit the environment they are spawned with: one OpenMP/BLAS thread each."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _timed(function: Callable[..., Any], *args) -> tuple[Any, float]:
    global _task_running
    if _stopping is not None and _stopping.is_set():  # queued before the stage stopped: not started
        return None, 0.0
    start = time.perf_counter()
    _task_running = True
    try:
        return function(*args), time.perf_counter() - start
    except BaseException:
        if _stopping is not None:  # a failed task stops the stage: what this child dequeues next must not start
            _stopping.set()
        raise
    finally:
        _task_running = False


def _stop(pool: ProcessPoolExecutor, stopping) -> None:
    """Drop the tasks not started and interrupt the running ones; the pool's shutdown then waits for their runs to
    close as interrupted."""
    stopping.set()
    pool.shutdown(wait=False, cancel_futures=True)
    for child in multiprocessing.active_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class _Progress:
    """One log line a finished task: the stage's count, what finished and how long it took, and the time left if
    the tasks still to run take as long on average as the ones that ran (read-back ones included: an estimate)."""

    def __init__(self, stage: str, labels: list[str], workers: int):
        self.stage, self.labels, self.workers, self.spent = stage, labels, workers, []

    def finished(self, index: int, seconds: float) -> None:
        self.spent.append(seconds)
        done, total = len(self.spent), len(self.labels)
        left = total - done
        estimate = sum(self.spent) / done * left / min(self.workers, left) if left else 0.0
        pace = f"; about {_duration(estimate)} left" if estimate >= 1 else ""
        log.info("%s: %d of %d done (%s, %s)%s", self.stage, done, total, self.labels[index], _duration(seconds),
                 pace)


def run_tasks(labelled: dict[str, Task], jobs: int, stage: str = "tasks") -> list:
    """Every task's result, in the dict's order: here one after another with jobs 1, else in `jobs` processes. Each
    finished task is logged under `stage` by its label (the key)."""
    labels, tasks = list(labelled), list(labelled.values())
    progress = _Progress(stage, labels, max(jobs, 1))
    if jobs <= 1 or len(tasks) <= 1:
        results = []
        for index, (function, args) in enumerate(tasks):
            result, seconds = _timed(function, *args)
            progress.finished(index, seconds)
            results.append(result)
        return results
    context = multiprocessing.get_context("spawn")  # no forked copy of a parent's threads or CUDA state
    workers = min(jobs, len(tasks))
    devices = _devices()
    queue = None
    if len(devices) > 1:
        queue = context.Queue()
        for i in range(workers):
            queue.put(devices[i % len(devices)])
    results: list = [None] * len(tasks)
    stopping = context.Event()
    with _one_thread_each(), ProcessPoolExecutor(workers, mp_context=context, initializer=_start_child,
                                                 initargs=(queue, stopping)) as pool:
        futures = {pool.submit(_timed, function, *args): index for index, (function, args) in enumerate(tasks)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                results[index], seconds = future.result()
                progress.finished(index, seconds)
        except BaseException as exc:
            log.info("%s: %s; stopping the tasks under way", stage,
                     "interrupted" if isinstance(exc, KeyboardInterrupt) else "a task failed")
            _stop(pool, stopping)
            raise
    return results
