"""Training checkpoints that resume without unpickling anything.

A checkpoint is Accelerate's state (weights as safetensors; the optimizer's and random generators'
states as torch files) plus trainer_state.json: the step counters, the learning-rate schedule and the
privacy accountant as JSON, and the sha256 of every file the checkpoint wrote. Resuming refuses a
checkpoint whose files differ from those hashes or that holds a file it did not write, so a crafted
file in a run directory (a `custom_checkpoint_0.pkl`, say) is never opened; and every `torch.load`
while resuming is forced to torch's weights-only loader, which rebuilds tensors and plain containers
and runs no code, whatever a library asks for.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from lethe.errors import LetheError
from lethe.processes import from_main_process

STATE = "trainer_state.json"
FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"  # torch.load reads it at every call, over its caller's choice


def _file_hashes(directory: Path) -> dict[str, str]:
    from lethe.runs import sha256_file

    return {str(path.relative_to(directory)): sha256_file(path)
            for path in sorted(directory.rglob("*")) if path.is_file() and path.name != STATE}


def save_checkpoint(trainer, target: Path, state: dict) -> None:
    """Accelerate's state into `target`, then (main process) trainer_state.json, written last: a checkpoint
    without it is incomplete and never resumed from."""
    from lethe.run_paths import confined

    accel = trainer.accelerator
    accel.save_state(str(confined(target)), safe_serialization=True)
    accel.wait_for_everyone()  # every process's random-generator file is on disk before it is hashed
    if accel.is_main_process:
        from lethe.runs import write_json

        state = state | {"scheduler": trainer.scheduler.state_dict(), "files": _file_hashes(target)}
        if trainer.privacy is not None:  # a resumed run must go on spending the same budget
            state["accountant"] = trainer.privacy.engine.accountant.state_dict()
        write_json(target / STATE, state)
        for old in sorted(target.parent.glob("step-*")):
            if old != target:
                shutil.rmtree(old)
    accel.wait_for_everyone()


def weights_digest(model) -> list[str]:
    """Each parameter's bytes hashed, sorted: equal for two models with the same weights, whatever wraps them (LoRA
    merged, Opacus, Accelerate), so a run can tell that training left its model bit-identical."""
    import hashlib

    import torch

    digests = []
    for param in model.parameters():
        raw = param.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # bytes, whatever the dtype
        digests.append(hashlib.blake2b(raw.numpy().tobytes(), digest_size=16).hexdigest())
    return sorted(digests)


def latest_checkpoint(directory: Path | None) -> Path:
    found = sorted(directory.glob(f"step-*/{STATE}")) if directory else []
    if not found:
        raise LetheError(f"no checkpoint to resume from in {directory} (the run stopped before its first one, or "
                         "train.checkpoint_every is unset); start it again with --overwrite")
    return found[-1].parent


def _refusal(checkpoint: Path, state: dict) -> str | None:
    """Why `checkpoint` may not be loaded: a file changed, missing or added since it was written."""
    recorded = state.get("files")
    if not isinstance(recorded, dict) or not recorded:
        return (f"{checkpoint} records no hashes of its files (written by an older Lethe, or not by Lethe); "
                "it is not loaded: start the run again with --overwrite")
    found = _file_hashes(checkpoint)
    added = sorted(set(found) - set(recorded))
    changed = sorted(name for name in recorded if found.get(name) != recorded[name])
    if added or changed:
        what = "; ".join(part for part in (f"files it did not write: {', '.join(added)}" if added else "",
                                           f"changed or missing: {', '.join(changed)}" if changed else "") if part)
        return (f"{checkpoint} is not the checkpoint Lethe wrote ({what}); nothing in it was loaded: remove what "
                "was added or start the run again with --overwrite")
    return None


@contextmanager
def _weights_only_loads():
    before = os.environ.get(FORCE_WEIGHTS_ONLY)
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FORCE_WEIGHTS_ONLY, None)
        else:
            os.environ[FORCE_WEIGHTS_ONLY] = before


def load_checkpoint(trainer, checkpoint: Path) -> dict:
    """The trainer's state restored from `checkpoint` once its files match their hashes; returns its JSON state."""
    try:
        state = json.loads((checkpoint / STATE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        state, refusal = {}, f"{checkpoint / STATE} cannot be read ({exc})"
    else:
        refusal = _refusal(checkpoint, state) if trainer.accelerator.is_main_process else None
    if refusal := from_main_process(refusal):
        raise LetheError(refusal)
    import pickle

    try:
        with _weights_only_loads():
            trainer.accelerator.load_state(str(checkpoint))
    except pickle.UnpicklingError as exc:  # what the weights-only loader raises for anything but plain data
        raise LetheError(f"{checkpoint} holds a file that is not plain tensors ({str(exc).splitlines()[0]}); "
                         "it was not loaded") from None
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.privacy is not None:
        trainer.privacy.engine.accountant.load_state_dict(state["accountant"])
    return state
