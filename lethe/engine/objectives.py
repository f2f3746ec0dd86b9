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


def token_cross_entropy(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy over the real (unpadded) tokens of a batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                           ignore_index=-100)


@objectives.register("lm")
class LanguageModeling:
    """Plain next-token prediction: pre-training and fine-tuning."""

    groups = ("train",)

    def __call__(self, model, batches):
        loss = token_cross_entropy(model, batches["train"])
        return loss, {"loss": loss.item()}
