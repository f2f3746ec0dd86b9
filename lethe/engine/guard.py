"""The divergence guard: signals that a training run has left any sane range, and the last weights that had not.

A non-finite loss or gradient always stops training. With the guard on (the default), so does a loss or
gradient norm far beyond what a working run produces, or a gradient that stays exactly 0 (a model whose
predictions have collapsed learns nothing more). Unlearning by gradient ascent legitimately drives its loss
up, so the limits are absolute magnitudes no working run reaches, not trends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from lethe.config import GuardConfig


class Guard:
    def __init__(self, config: GuardConfig, on_any_process: Callable[[bool], bool]) -> None:
        self.config = config
        self.on_any_process = on_any_process  # every process must stop together
        self.good: list[torch.Tensor] | None = None  # the last weights whose loss and gradient were sane
        self.good_step = 0
        self.zero_grad_steps = 0

    def loss_problem(self, loss: float) -> str | None:
        if self.on_any_process(not math.isfinite(loss)):
            return f"loss became {loss}"
        if self.config.enabled and self.on_any_process(abs(loss) > self.config.max_loss):
            return f"loss {loss:.3g} left the sane range (train.guard.max_loss {self.config.max_loss:g})"
        return None

    def gradient_problem(self, norm: float) -> str | None:
        """Before the update; counts the steps in a row without any gradient."""
        if self.on_any_process(not math.isfinite(norm)):
            return "gradient norm became non-finite"
        if not self.config.enabled:
            return None
        if norm > self.config.max_grad_norm:
            return f"gradient norm {norm:.3g} left the sane range (train.guard.max_grad_norm " \
                   f"{self.config.max_grad_norm:g})"
        self.zero_grad_steps = self.zero_grad_steps + 1 if norm == 0.0 else 0
        if self.zero_grad_steps >= self.config.zero_grad_steps:
            return (f"the gradient was 0 for {self.zero_grad_steps} steps in a row: the model no longer learns "
                    "anything (its predictions have collapsed)")
        return None

    def remember(self, params: Sequence[torch.Tensor], step: int) -> None:
        """Weights that just passed every check (kept only with the guard on, and only while they still learn)."""
        if not self.config.enabled or self.zero_grad_steps:
            return
        if self.good is None:
            self.good = [p.detach().clone() for p in params]
        else:
            for kept, param in zip(self.good, params, strict=True):
                kept.copy_(param.detach())
        self.good_step = step

    def restore(self, params: Sequence[torch.Tensor], step: int) -> int:
        """Put the last good weights back (with nothing remembered, the current ones are they); their step."""
        if self.good is None:
            return step
        with torch.no_grad():
            for kept, param in zip(self.good, params, strict=True):
                param.copy_(kept)
        return self.good_step
