"""The victim fine-tuning modes of the leakage study, registered by the name configs use (`modes:`).

A mode turns the study's config into its cells: one victim each, named as its results.json key and its
sub-run directory (cells/<variant>/<name>), with the fine-tuning settings it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lethe.config import LeakageConfig, deep_merge
from lethe.registry import Registry


@dataclass(frozen=True)
class VictimCell:
    name: str  # "full", "dp_eps8": the key and directory of its results
    settings: dict[str, Any] = field(default_factory=dict)  # FinetuneConfig fields it sets over the study's
    epsilon: float | None = None  # the DP-SGD target ε, for cells that fine-tune privately

    def finetune_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        return deep_merge(settings, self.settings)


Mode = Callable[[LeakageConfig], list[VictimCell]]
victim_modes: Registry[Mode] = Registry("victim fine-tuning mode")


@victim_modes.register("full")
def full(config: LeakageConfig) -> list[VictimCell]:
    """Every parameter fine-tuned."""
    return [VictimCell("full", {"mode": "full"})]


@victim_modes.register("lora")
def lora(config: LeakageConfig) -> list[VictimCell]:
    """LoRA adapters, merged into the saved victim."""
    return [VictimCell("lora", {"mode": "lora"})]


@victim_modes.register("head")
def head(config: LeakageConfig) -> list[VictimCell]:
    """The LM head (and finetune.trainable_layers blocks below it)."""
    return [VictimCell("head", {"mode": "head"})]


@victim_modes.register("dp")
def dp(config: LeakageConfig) -> list[VictimCell]:
    """DP-SGD fine-tuning of `dp_mode`, one cell per ε of `dp_epsilons`."""
    return [VictimCell(f"dp_eps{epsilon:g}", {"mode": config.dp_mode, "dp": {"epsilon": epsilon}}, epsilon)
            for epsilon in config.dp_epsilons]


def cells_of(config: LeakageConfig, mode: str) -> list[VictimCell]:
    return victim_modes.get(mode)(config)


def victim_cells(config: LeakageConfig) -> list[VictimCell]:
    """Every cell of the study's modes, in the order of `modes` (then of `dp_epsilons`)."""
    return [cell for mode in config.modes for cell in cells_of(config, mode)]
