"""What lets a big model train: gradient checkpointing, and no silent fallback from sharding to whole copies."""

from __future__ import annotations

import os

import torch

from lethe.errors import LetheError


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Hugging Face's per-block recomputation: each block keeps only its input for backward and reruns its forward
    there (about a third more compute for a fraction of the activations). Non-reentrant: it works with inputs that
    need no gradient, with LoRA and with FSDP, and gives the same gradients."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise LetheError(f"train.gradient_checkpointing: {type(model).__name__} does not support gradient "
                         "checkpointing (Hugging Face's gradient_checkpointing_enable); set it to false")
    if hasattr(model, "activation_checkpointing_enable"):  # its name in recent transformers 5 (the old one warns)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def refuse_ignored_sharding(accelerator) -> None:
    """`accelerate launch` with an FSDP or DeepSpeed config on a machine without GPUs: Accelerate 1.15 turns either
    on only for accelerator devices and would run plain data parallelism instead, every process holding the whole
    model, which is not what was asked for."""
    from accelerate.utils import DistributedType

    for variable, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(variable, "false").lower() == "true" and accelerator.distributed_type in (
                DistributedType.MULTI_CPU, DistributedType.NO) and accelerator.device.type == "cpu":
            raise LetheError(f"{name} was asked for, but Accelerate enables it only on GPUs (on a CPU it would "
                             "silently train whole copies of the model in every process): launch with "
                             "configs/accelerate/ddp.yaml here")
