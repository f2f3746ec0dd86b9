"""DP-SGD through Opacus: per-sample gradient clipping plus Gaussian noise, accounted for a target (ε, δ).

The Trainer keeps dealing its own fixed-size batches from a seeded shuffle (so runs stay exactly
reproducible); Opacus is handed a DataLoader over the sample indices only to read the sampling rate
(1 / micro-batches per epoch) and the expected batch size, with `poisson_sampling=False`. Its
accountant then analyses Poisson subsampling at that rate — Opacus's documented approximation for
shuffled fixed-size batches, not a proof for them. Noise comes from torch's seeded generator
(Opacus's secure_mode is off): reproducible, not cryptographically secure.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from lethe.config import DPConfig
from lethe.errors import LetheError

log = logging.getLogger("lethe")


def default_delta(samples: int) -> float:
    """1/N rounded down to a power of ten: δ at most 1/N, as usual."""
    return 10.0 ** math.floor(math.log10(1 / samples))


@dataclass
class PrivateTraining:
    """What the privacy engine was set up with; `epsilon()` is what its accountant has spent so far."""

    engine: Any  # opacus.PrivacyEngine: its accountant records (noise, sample rate) at every optimiser step
    hooks: Any  # opacus GradSampleHooks on the model
    positions: Any  # the handle of the forward pre-hook that gives every sample its own position ids
    config: DPConfig
    delta: float
    noise_multiplier: float
    sample_rate: float  # per optimiser step
    samples: int
    steps_planned: int

    def cleanup(self) -> None:
        self.hooks.cleanup()
        self.positions.remove()

    def epsilon(self) -> float:
        return float(self.engine.get_epsilon(self.delta))

    def summary(self) -> dict:
        return {"epsilon": self.epsilon(), "target_epsilon": self.config.epsilon, "delta": self.delta,
                "noise_multiplier": self.noise_multiplier, "max_grad_norm": self.config.max_grad_norm,
                "sample_rate": self.sample_rate, "samples": self.samples, "unit": "chunk",
                "steps": sum(steps for _, _, steps in self.engine.accountant.history),
                "steps_planned": self.steps_planned, "accountant": self.config.accountant}


def check_supported(model: torch.nn.Module) -> None:
    """Refuse, naming it, the first trainable layer Opacus cannot give per-sample gradients.

    Opacus's own validation lists what is wrong but not where; this walks the same checks per layer.
    """
    from opacus.grad_sample import GradSampleHooks
    from opacus.utils.module_utils import trainable_modules
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False) + GradSampleHooks.validate(model, strict=False)
    if not errors:
        return
    for name, module in trainable_modules(model):
        validator = ModuleValidator.VALIDATORS.get(type(module))
        problems = [str(error) for error in validator(module)] if validator else []
        if list(module.buffers()):
            problems.append("it holds buffers, state shared across samples")
        if problems:
            reason = problems[0].split(". ")[0].rstrip(".")
            raise LetheError(f"Opacus cannot train layer {name or '<root>'} ({type(module).__name__}) with DP-SGD: "
                             f"{reason}; freeze it, or use mode lora")
    raise LetheError(f"Opacus refuses the model for DP-SGD: {errors[0]}")


def name_functorch_failures(model: torch.nn.Module) -> None:
    """Layer types without an Opacus rule (e.g. LlamaRMSNorm) get per-sample gradients by vmap over their
    forward; one vmap cannot trace fails only at the first backward, so name the layer when it does."""
    for name, module in model.named_modules():
        if hasattr(module, "ft_compute_sample_grad"):
            layer = f"{name} ({type(module).__name__})"
            log.debug("per-sample gradients of %s through functorch", layer)
            module.ft_compute_sample_grad = _naming_failures(module.ft_compute_sample_grad, layer)


def _naming_failures(compute, layer: str):
    def compute_or_name(*args):
        try:
            return compute(*args)
        except RuntimeError as exc:
            raise LetheError(f"Opacus cannot compute per-sample gradients of layer {layer} with functorch: "
                             f"{str(exc).split('. ')[0]}; freeze it, or use mode lora") from None

    return compute_or_name


def _per_sample_positions(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Position ids of shape (batch, length) instead of the (1, length) row that GPT-2 and GPT-Neo broadcast.

    Opacus takes a layer's per-sample gradients from its per-sample inputs: a learned position embedding
    fed one shared row yields gradients for a batch of one, and Opacus fails on stacking them with the
    other layers' ("stack expects each tensor to be equal size"). Batches are right-padded, so positions
    count from 0 in every row.
    """
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    if kwargs.get("position_ids") is None and input_ids is not None:
        batch, length = input_ids.shape
        kwargs["position_ids"] = torch.arange(length, device=input_ids.device).repeat(batch, 1)
    return args, kwargs


def make_private(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: DPConfig, *, samples: int,
                 batch_size: int, grad_accum: int, steps: int) -> tuple[torch.nn.Module, Any, PrivateTraining]:
    """Attach per-sample gradient hooks to `model` (not wrapped) and a DP optimiser calibrated for `steps`.

    The noise multiplier is solved for the exact number of optimiser steps and the per-step sampling
    rate (grad_accum micro-batches); make_private_with_epsilon would assume int(epochs / rate) steps
    of one micro-batch each, which is wrong under gradient accumulation or fractional epochs.
    """
    root_handlers = list(logging.getLogger().handlers)
    from opacus import PrivacyEngine
    from opacus.accountants.utils import get_noise_multiplier

    logging.getLogger().handlers = root_handlers  # Opacus calls logging.basicConfig on import: undo it
    model.train()  # Opacus validates in training mode
    check_supported(model)
    delta = config.delta or default_delta(samples)
    loader = torch.utils.data.DataLoader(range(samples), batch_size=batch_size)
    # Opacus accounts sample_rate × accumulated micro-batches at every step: one full window is this rate
    sample_rate = min(1.0, grad_accum / len(loader))
    try:
        sigma = get_noise_multiplier(target_epsilon=config.epsilon, target_delta=delta, sample_rate=sample_rate,
                                     steps=steps, accountant=config.accountant)
    except ValueError as exc:
        raise LetheError(f"no noise level reaches ε={config.epsilon} at δ={delta:g} over {steps} steps "
                         f"({exc}); raise dp.epsilon or train fewer steps") from None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=config.accountant)
    hooks, optimizer, _ = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma,
        max_grad_norm=config.max_grad_norm, poisson_sampling=False, wrap_model=False)
    name_functorch_failures(model)
    positions = model.register_forward_pre_hook(_per_sample_positions, with_kwargs=True)
    log.info("DP-SGD: noise multiplier %.3f for ε=%g, δ=%g over %d steps at sample rate %.4f (%s accountant)",
             sigma, config.epsilon, delta, steps, sample_rate, config.accountant)
    return model, optimizer, PrivateTraining(engine, hooks, positions, config, delta, sigma, sample_rate, samples,
                                             steps)
