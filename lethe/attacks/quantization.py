"""The quantization attack on unlearning (Zhang et al., 2024, "Catastrophic failure of LLM unlearning via
quantization"): an unlearned model whose weights moved only a little from the original can round back to it.

Weights are quantized round-to-nearest (RTN), asymmetrically per group of `group_size` input columns, and
dequantized at once, so the model runs on any device in its own dtype: w ≈ s·(q − z), q ∈ {0, …, 2^bits − 1},
with the group's range widened to include 0 so that zero stays exact. RTN is the baseline of that paper (it also
reports GPTQ and AWQ, which need calibration data and kernels this CPU path does not have).
"""

from __future__ import annotations

import copy

import torch

from lethe.errors import LetheError


def quantize_rtn(weight: torch.Tensor, bits: int, group_size: int = 128) -> torch.Tensor:
    """`weight` (out × in) quantized to `bits` per group of `group_size` input columns and dequantized; a last
    group narrower than `group_size` gets its own scale."""
    if not 2 <= bits <= 8:
        raise LetheError(f"quantization to {bits} bits: choose 2 to 8")
    levels = 2 ** bits - 1
    out = torch.empty_like(weight)
    for start in range(0, weight.shape[1], group_size):
        group = weight[:, start:start + group_size].float()
        low = group.amin(dim=1, keepdim=True).clamp(max=0)
        high = group.amax(dim=1, keepdim=True).clamp(min=0)
        scale = ((high - low) / levels).clamp(min=torch.finfo(torch.float32).tiny)
        zero = torch.round(-low / scale)
        codes = torch.clamp(torch.round(group / scale) + zero, 0, levels)
        out[:, start:start + group_size] = ((codes - zero) * scale).to(weight.dtype)
    return out


def quantize_model(model: torch.nn.Module, bits: int, group_size: int = 128) -> torch.nn.Module:
    """A copy of `model` whose linear layers are RTN-quantized; embeddings and the output head stay as they are
    (as GPTQ/AWQ leave them), so a tied head keeps the embedding's precision."""
    quantized = copy.deepcopy(model)
    head = quantized.get_output_embeddings()
    with torch.no_grad():
        for module in quantized.modules():
            if isinstance(module, torch.nn.Linear) and module is not head:
                module.weight.copy_(quantize_rtn(module.weight, bits, group_size))
    return quantized
