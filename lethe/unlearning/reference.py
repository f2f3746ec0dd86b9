"""The frozen original model that KL, NPO and adversarial unlearning read: made only for methods that read it, and
kept where `train.reference_model` says (the trained model's device and dtype, bfloat16, or CPU memory)."""

from __future__ import annotations

import copy

import torch

from lethe.config import MethodArgs
from lethe.errors import LetheError


def uses_reference(method: type, args: MethodArgs) -> bool:
    """Whether `method` with `args` reads the original model (its own term, or a KL retain term)."""
    return method.uses_reference(args)


class PlacedReference(torch.nn.Module):
    """A model kept on another device: inputs go there, logits come back to the caller's device."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        home = next(self.model.parameters()).device
        output = self.model(input_ids=input_ids.to(home), attention_mask=attention_mask.to(home))
        output.logits = output.logits.to(input_ids.device)
        return output


def converted_copy(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None) -> torch.nn.Module:
    """A frozen eval-mode copy with each weight converted while it is copied, so the model's own device never holds
    a second full-precision copy, even for a moment; buffers (rotary frequencies) keep their dtype."""
    # copy=True: a weight already of that device and dtype would otherwise be shared, and train along
    converted = {id(p): torch.nn.Parameter(p.detach().to(device, dtype=dtype if p.is_floating_point() else None,
                                                         copy=True), requires_grad=False) for p in model.parameters()}
    converted |= {id(b): b.detach().to(device, copy=True) for b in model.buffers()}
    return copy.deepcopy(model, memo=converted).eval()


def frozen_reference(model: torch.nn.Module, placement: str) -> torch.nn.Module:
    """The frozen original for `train.reference_model`: same, bf16 (on the model's GPU) or cpu."""
    device = next(model.parameters()).device
    if placement == "same":
        return copy.deepcopy(model).requires_grad_(False).eval()
    if placement == "bf16":
        if device.type == "cpu":
            raise LetheError("train.reference_model=bf16 is for GPUs: bfloat16 on a CPU is hundreds of times slower; "
                             "use same")
        return converted_copy(model, device, torch.bfloat16)
    reference = converted_copy(model, torch.device("cpu"), None)
    return PlacedReference(reference) if device.type != "cpu" else reference
