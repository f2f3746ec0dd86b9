"""How many processes run one command (`accelerate launch`), and which of them writes its record."""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

# the variables torchrun and MPI set; Accelerate reads the same ones
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def on_cpu_only() -> bool:
    import torch

    return not torch.accelerator.is_available()


def launched_processes() -> int:
    """Processes started for this command, read from the launcher's environment: cheap, and needs no
    process group (the CLI asks before it imports torch)."""
    sizes = (int(os.environ[name]) for name in WORLD_SIZE_VARIABLES if os.environ.get(name, "").isdigit())
    return max(next(sizes, 1), 1)


def process_state():
    """Accelerate's view of the processes. Without an accelerator, processes started by
    `accelerate launch --multi_gpu` (torchrun) still join one run, over gloo on the CPU."""
    from accelerate import PartialState

    return PartialState(cpu=on_cpu_only())


def is_main_process() -> bool:
    return launched_processes() == 1 or process_state().is_main_process


def from_main_process(value: T) -> T:
    """The main process's value on every process, so all of them return (and decide) the same."""
    if launched_processes() == 1:
        return value
    from accelerate.utils import broadcast_object_list

    process_state()  # joins the process group the broadcast needs
    return broadcast_object_list([value], from_process=0)[0]
