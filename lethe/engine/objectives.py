"""Objectives: (model, named batches) → (loss, logs). Methods register here under their config name."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from lethe.registry import Registry

Batch = dict[str, torch.Tensor]


class Objective(Protocol):
    groups: tuple[str, ...]  # the batch groups it reads; the first one sets the epoch length

    def __call__(self, model: torch.nn.Module, batches: dict[str, Batch]) -> tuple[torch.Tensor, dict[str, float]]: ...


objectives: Registry[type] = Registry("objective")


def next_token_targets(targets: torch.Tensor) -> torch.Tensor:
    """(B, T-1) targets for positions 0..T-2 → (B, T) aligned with the logits, -100 at the last position.

    Shifting the targets rather than slicing the logits avoids copying the largest tensor of the step.
    """
    return F.pad(targets, (0, 1), value=-100)


ROW_BLOCK_FLOATS = 1 << 20  # fp32 values per block of rows: 4 MiB, which stays in cache while it is worked on


class TokenCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy of (N, V) logits against (N,) targets (-100: ignored, loss 0), in float32.

    F.cross_entropy keeps a full (N, V) log-softmax for its backward and, for bf16 logits, a float32 copy of
    them; its backward then writes two more (N, V) tensors. Here only the logits themselves are kept, each
    block of rows is upcast only while it is worked on (and stays in cache), and the backward writes the
    gradient once: softmax − one-hot, recomputed block by block. Measured on CPU (2,048 × 8,192): about
    half the time of F.cross_entropy's forward and backward, with the same per-token losses.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rows = max(1, ROW_BLOCK_FLOATS // logits.shape[1])
        ignored = targets == -100
        picked = targets.masked_fill(ignored, 0)
        # per block, the fused log-softmax (twice as fast as logsumexp on CPU; per-token values F.cross_entropy's)
        loss = -torch.cat([torch.log_softmax(block, -1, dtype=torch.float32).gather(1, chosen[:, None]).squeeze(1)
                           for block, chosen in zip(logits.split(rows), picked.split(rows), strict=True)])
        ctx.save_for_backward(logits, picked, ignored)
        return loss.masked_fill(ignored, 0.0)

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        logits, picked, ignored = ctx.saved_tensors
        rows = max(1, ROW_BLOCK_FLOATS // logits.shape[1])
        scale = grad_loss.masked_fill(ignored, 0.0)[:, None]
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], rows):
            block = slice(start, start + rows)
            probs = torch.softmax(logits[block], -1, dtype=torch.float32)
            probs.scatter_add_(1, picked[block, None], probs.new_full((probs.shape[0], 1), -1.0))
            grad[block] = probs.mul_(scale[block])
        return grad, None


def mean_nll(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of (B, T, V) logits against (B, T) aligned targets, ignoring -100 (float32 for bf16 logits)."""
    loss = TokenCrossEntropy.apply(logits.flatten(0, 1), targets.flatten())
    if reduction == "none":
        return loss.view(targets.shape)
    return loss.sum() / (targets != -100).sum()


def token_cross_entropy(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy over the real (unpadded) tokens of a batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return mean_nll(logits, next_token_targets(batch["labels"][:, 1:]))


@objectives.register("lm")
class LanguageModeling:
    """Plain next-token prediction: pre-training and fine-tuning."""

    groups = ("train",)

    def __call__(self, model, batches):
        loss = token_cross_entropy(model, batches["train"])
        return loss, {"loss": loss.item()}


def sample_cross_entropy(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """(B,) mean next-token cross-entropy of each chunk over its own real tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = next_token_targets(batch["labels"][:, 1:])
    return mean_nll(logits, targets, reduction="none").sum(-1) / (targets != -100).sum(-1).clamp_min(1)


@objectives.register("lm_per_sample")
class PerSampleLanguageModeling:
    """Next-token prediction as a mean over chunks of each chunk's token mean: the loss DP-SGD needs.

    Opacus recovers each sample's gradient by scaling the batch gradient by the batch size
    (loss_reduction="mean"), which is exact only for a plain mean of per-sample losses. Under `lm`'s
    mean over all tokens of the batch, a chunk's weight would depend on the other chunks' lengths.
    """

    groups = ("train",)

    def __call__(self, model, batches):
        loss = sample_cross_entropy(model, batches["train"]).mean()
        return loss, {"loss": loss.item()}
