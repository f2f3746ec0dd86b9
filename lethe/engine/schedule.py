"""The learning-rate schedule (Hugging Face's), and the refusal of a run whose every step would have rate 0."""

from __future__ import annotations

import math

import torch

from lethe.config import TrainConfig
from lethe.errors import LetheError


def schedule(config: TrainConfig, optimizer, total_steps: int):
    from transformers import get_scheduler

    warmup = math.ceil(config.warmup_ratio * total_steps)
    return get_scheduler(config.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def refuse_no_updates(config: TrainConfig, total_steps: int) -> None:
    """Warm-up starts at learning rate 0: a run whose every step falls there would change nothing."""
    rates = schedule(config, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), total_steps)
    factors = getattr(rates, "lr_lambdas", [lambda step: 1.0])[0]
    warmup = math.ceil(config.warmup_ratio * total_steps)
    if not any(factors(step) > 0 for step in range(min(total_steps, warmup + 1))):
        raise LetheError(f"training would change nothing: its {total_steps} optimiser step(s) all fall in the "
                         "learning-rate warm-up, at rate 0; train longer (train.epochs, train.max_steps) or set "
                         "train.warmup_ratio=0")
