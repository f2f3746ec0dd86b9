"""`--jobs N`: a study's independent runs (releases, fine-tunes, attacked cells, unlearning runs, shadows) N at a time,
in processes.

Each child runs with one thread (OMP_NUM_THREADS=1 and torch.set_num_threads(1)): N processes of one
thread share a CPU's cores without oversubscribing them. Where there are several GPUs, each child
takes one (CUDA_VISIBLE_DEVICES), dealt round robin. A task is one Lethe run directory, read back when
it finished, so an interrupted study resumes task by task as it does run by run.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

Task = tuple[Callable[..., Any], tuple]


def _devices() -> list[str]:
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def _start_child(devices) -> None:
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


def run_tasks(tasks: list[Task], jobs: int) -> list:
    """Every task's result, in task order: here one after another with jobs 1, else in `jobs` processes."""
    if jobs <= 1 or len(tasks) <= 1:
        return [function(*args) for function, args in tasks]
    context = multiprocessing.get_context("spawn")  # no forked copy of a parent's threads or CUDA state
    workers = min(jobs, len(tasks))
    devices = _devices()
    queue = None
    if len(devices) > 1:
        queue = context.Queue()
        for i in range(workers):
            queue.put(devices[i % len(devices)])
    with _one_thread_each(), ProcessPoolExecutor(workers, mp_context=context, initializer=_start_child,
                                                 initargs=(queue,)) as pool:
        futures = [pool.submit(function, *args) for function, args in tasks]
        return [future.result() for future in futures]
