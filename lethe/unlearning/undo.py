"""UNDO (Lee et al., 2025, "Distillation robustifies unlearning"): unlearn, perturb, distil.

1. unlearn with a base method (`undo_method`), through the normal path;
2. perturb the unlearned weights towards a fresh initialisation: θ ← (1−α)·θ + α·θ_init;
3. distil the unlearned model's next-token distributions into the perturbed copy, KL(P_unlearned ‖ P_θ) on retain
   (or general) text, for a compute budget stated as a share of the pre-training compute.

Both training phases run on the one engine (lethe.engine.Trainer). The distillation's compute counts the student's
training (6·N per token) and the teacher's forward (2·N per token) against pre-training's 6·N per token, so a
budget share s buys s·6/8 of the pre-training tokens.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal

import torch
from pydantic import AfterValidator, Field

from lethe.config import MethodArgs, Strict, UnlearnConfig
from lethe.data.roles import retain_split
from lethe.engine.head import predict
from lethe.engine.losses import Batch
from lethe.errors import LetheError
from lethe.unlearning.methods import MethodContext, Unlearning, logits_of, masked_kl, methods
from lethe.unlearning.reference import frozen_reference

if TYPE_CHECKING:
    from lethe.engine.trainer import Trainer, TrainResult

STUDENT_FLOPS, TEACHER_FLOPS, PRETRAIN_FLOPS = 6, 2, 6  # per parameter and token


def perturb(model: torch.nn.Module, alpha: float, seed: int) -> None:
    """θ ← (1−α)·θ + α·θ_init in place, θ_init drawn as a fresh model is initialised (Hugging Face's default):
    matrices ~ N(0, σ²) with σ the config's initializer_range (0.02 without one), norm scales 1, biases 0.
    Drawn on the CPU from a seeded generator, parameter by parameter (tied weights once), so every device and
    process draws the same noise."""
    generator = torch.Generator().manual_seed(seed)
    std = getattr(getattr(model, "config", None), "initializer_range", None) or 0.02
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.ndim >= 2:
                fresh = torch.randn(weight.shape, generator=generator) * std
            else:
                fresh = torch.zeros(weight.shape) if name.endswith("bias") else torch.ones(weight.shape)
            weight.mul_(1 - alpha).add_(fresh.to(weight.device, weight.dtype), alpha=alpha)


class Distillation:
    """KL(P_teacher ‖ P_θ) over the real positions of a batch of the `distil` group (the engine's objective)."""

    groups = ("distil",)
    reads_logits = True

    def __init__(self, teacher: torch.nn.Module) -> None:
        self.context = MethodContext(reference=teacher)  # where the memory estimate finds the frozen model
        self.reference_tokens = 0

    def __call__(self, model, batches: dict[str, Batch]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = batches["distil"]
        self.reference_tokens += int(batch["attention_mask"].sum())
        with torch.no_grad():
            teacher = logits_of(self.context.reference, batch)
        loss = masked_kl(teacher, predict(model, batch).logits, batch)
        return loss, {"loss": loss.item(), "distil_kl": loss.item()}


def distillation_steps(budget: float, pretrain_tokens: float, chunks: list, tokens_per_row: int) -> int:
    """Optimiser steps whose tokens spend `budget` × the pre-training compute; `tokens_per_row`: rows per step
    (batch × accumulation × processes), the chunks' mean length giving the tokens of a row."""
    tokens = budget * PRETRAIN_FLOPS * pretrain_tokens / (STUDENT_FLOPS + TEACHER_FLOPS)
    mean_length = sum(len(chunk) for chunk in chunks) / len(chunks)
    return max(1, math.ceil(tokens / (mean_length * tokens_per_row)))


def then(first: TrainResult, second: TrainResult) -> TrainResult:
    """One result for two phases run one after the other (the second's steps numbered on from the first's)."""
    from lethe.engine.trainer import TrainResult
    later = [{**record, "step": record["step"] + first.steps} for record in second.history]
    return TrainResult(steps=first.steps + second.steps, tokens=first.tokens + second.tokens,
                       seconds=first.seconds + second.seconds, stopped=second.stopped,
                       history=first.history + later)


def summary(result: TrainResult) -> dict:
    return {"steps": result.steps, "tokens": result.tokens, "seconds": result.seconds, "stopped": result.stopped}


def base_method(name: str) -> str:
    """Checked when the config is read (an Annotated validator travels into the schema of every method's arguments)."""
    if name == "undo":
        raise ValueError("the method undo runs first cannot be undo itself")
    if name not in methods:
        raise ValueError(f"unknown unlearning method {name!r} (known: {', '.join(methods.names())})")
    return name


@methods.register("undo")
class UnlearnNoiseDistil(Unlearning):
    """UNDO (Lee et al., 2025): the base method unlearns, the weights are mixed with fresh initialisation noise by
    α, and the unlearned model's outputs are distilled into the perturbed copy for a share of pre-training compute."""

    class Args(Strict):
        undo_method: Annotated[str, AfterValidator(base_method)] = Field(
            "ga_gd_in", description="the base method that unlearns first (its own arguments and the retain knobs "
            "apply to it)")
        undo_alpha: float = Field(0.5, gt=0, le=1, description="α, the perturbation's strength: "
                                  "θ ← (1−α)·θ + α·θ_init (1: distil into a fresh model)")
        undo_data: Literal["in_domain", "general"] = Field(
            "in_domain", description="distillation text: the domain's retain set or general text")
        undo_budget: float = Field(0.1, gt=0, description="distillation compute as a share of the pre-training "
                                   "compute (student 6·N + teacher 2·N FLOPs per token, against 6·N per "
                                   "pre-training token); needs the pre-training tokens (pretrain_tokens)")
        undo_lr: float | None = Field(None, gt=0, description="learning rate of the distillation (default train.lr)")

    def __init__(self, context: MethodContext, args: MethodArgs) -> None:
        super().__init__(context, args)
        self.base = methods.get(self.args.undo_method)(context, args)
        self.retain_term, self.retain_data = self.base.retain_term, self.base.retain_data
        self.pretrain_tokens: float | None = None

    @classmethod
    def uses_reference(cls, args: MethodArgs) -> bool:
        return methods.get(args.undo_method).uses_reference(args)

    @property
    def reads_logits(self) -> bool:
        return self.base.reads_logits

    def forget_loss(self, output, batch):
        return self.base.forget_loss(output, batch)

    def __call__(self, model, batches):
        return self.base(model, batches)

    def extra_splits(self, domain: str) -> list[str]:
        return [retain_split(domain, self.args.undo_data), *self.base.extra_splits(domain)]

    def prepare(self, model: torch.nn.Module, config: UnlearnConfig, pretrain: dict | None) -> None:
        """Refuse what cannot run before the base method's training starts."""
        if config.train.lora is not None:
            raise LetheError("undo perturbs and distils every weight; unset train.lora")
        if not (pretrain or {}).get("tokens"):
            raise LetheError(f"undo's budget is a share of the pre-training compute, and the tokens {config.model} "
                             "was trained on are unknown; set pretrain_tokens")
        self.pretrain_tokens = pretrain["tokens"]
        self.base.prepare(model, config, pretrain)

    def after_training(self, trainer: Trainer, result: TrainResult, chunks: dict[str, list],
                       config: UnlearnConfig) -> tuple[Trainer, TrainResult]:
        from lethe.engine.trainer import Trainer

        if trainer.shards_weights:
            raise LetheError("undo perturbs whole weights; run it without FSDP or DeepSpeed ZeRO-3")
        model = trainer.unwrapped_model()
        model.requires_grad_(True)  # the base method may have trained only some parameters; distillation trains all
        teacher = frozen_reference(model, config.train.reference_model)
        perturb(model, self.args.undo_alpha, config.train.seed)
        distil_chunks = chunks[retain_split(config.domain, self.args.undo_data)]
        train = config.train
        steps = distillation_steps(self.args.undo_budget, self.pretrain_tokens, distil_chunks,
                                   train.batch_size * train.grad_accum * trainer.accelerator.num_processes)
        # epochs enough that max_steps decides; no evaluations: the unlearning phase's yardstick does not apply
        train = train.model_copy(update={"lr": self.args.undo_lr or train.lr, "max_steps": steps,
                                         "epochs": float(steps), "eval_every": None, "early_stop": None})
        objective = Distillation(teacher)
        checkpoints = trainer.checkpoint_dir / "distil" if trainer.checkpoint_dir is not None else None
        pad_id = next(iter(trainer.streams.values())).pad_id
        distiller = Trainer(model, objective, {"distil": distil_chunks}, train, pad_id=pad_id,
                            checkpoint_dir=checkpoints, desc=f"undo: distil ({config.domain})",
                            tokenizer=trainer.tokenizer)
        distilled = distiller.fit()
        self.reference_tokens = self.base.reference_tokens + objective.reference_tokens
        self.phases = {"unlearn": {"method": self.args.undo_method, **summary(result)},
                       "distil": {"alpha": self.args.undo_alpha, "budget": self.args.undo_budget,
                                  "data": self.args.undo_data, **summary(distilled),
                                  "teacher_tokens": objective.reference_tokens}}
        return distiller, then(result, distilled)
