"""Objectives: (model, named batches) → (loss, logs). Methods register here under their config name."""

from __future__ import annotations

from typing import Protocol

import torch

from lethe.engine.head import predict
from lethe.engine.losses import Batch, mean_nll, next_token_targets
from lethe.registry import Registry


class Objective(Protocol):
    groups: tuple[str, ...]  # the batch groups it reads; the first one sets the epoch length
    reads_logits: bool  # whether a term needs the full logits (False: only mean cross-entropies, which a fused head
    # computes without them; the memory estimate reads it, and an objective without it counts the logits)

    def __call__(self, model: torch.nn.Module, batches: dict[str, Batch]) -> tuple[torch.Tensor, dict[str, float]]: ...


objectives: Registry[type] = Registry("objective")


def token_cross_entropy(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy over the real (unpadded) tokens of a batch (through a fused head if the model has
    one)."""
    return predict(model, batch).mean_nll(next_token_targets(batch["labels"][:, 1:]))


@objectives.register("lm")
class LanguageModeling:
    """Plain next-token prediction: pre-training and fine-tuning."""

    groups = ("train",)
    reads_logits = False

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
    reads_logits = True

    def __call__(self, model, batches):
        loss = sample_cross_entropy(model, batches["train"]).mean()
        return loss, {"loss": loss.item()}
