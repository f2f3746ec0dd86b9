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


def mean_nll(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of (B, T, V) logits against (B, T) aligned targets, ignoring -100 (float32 for bf16 logits)."""
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction=reduction)
    return loss if reduction == "mean" else loss.view(targets.shape)


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
