"""Unlearning methods: objectives over a `forget` batch and, for most, a `retain` batch.

Yao et al. write every method as a forget term plus an optional retain term; each class below
fills in only its forget term and declares its retain term, so the engine runs them all alike.
A method with arguments of its own declares them as its `Args` schema; `method_args` accepts them by
their names (declared_arguments), beside the retain knobs every method shares.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from pydantic import Field, create_model

from lethe.config import MethodArgs, Strict, UnlearnConfig
from lethe.engine.head import predict
from lethe.engine.losses import Batch, Prediction, mean_nll, next_token_targets
from lethe.errors import LetheError
from lethe.registry import Registry

if TYPE_CHECKING:
    from lethe.engine.trainer import Trainer, TrainResult

methods: Registry[type[Unlearning]] = Registry("unlearning method")


def declared_arguments() -> type[Strict]:
    """One schema of every registered method's own arguments: what `method_args` takes beyond the shared knobs
    (rebuilt when a method is registered later, by a plug-in or a test)."""
    return _arguments_schema(tuple(methods.get(name) for name in methods))


@functools.cache
def _arguments_schema(registered: tuple[type[Unlearning], ...]) -> type[Strict]:
    declared: dict = {}  # argument name → (type, field), as create_model takes them
    for method in registered:
        for key, info in method.Args.model_fields.items():
            if key in MethodArgs.model_fields or declared.get(key, (None, info))[1] is not info:
                raise ValueError(f"{method.__name__} declares the argument {key!r}, which another schema already "
                                 "has; prefix it with the method's name")
            declared[key] = (info.annotation, info)
    return create_model("MethodArguments", __base__=Strict, **declared)


@dataclass
class MethodContext:
    reference: torch.nn.Module | None  # the frozen original model
    special_ids: list[int] = field(default_factory=list)
    vocab_size: int = 0


def logits_of(model, batch: Batch) -> torch.Tensor:
    """A plain forward's logits (the frozen original model)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def target_mask(batch: Batch) -> torch.Tensor:
    """(B, T-1): True where the predicted token is a real (unpadded) token."""
    return batch["attention_mask"][:, 1:].bool()


def cross_entropy_to(output: Prediction, batch: Batch, targets: torch.Tensor) -> torch.Tensor:
    """Mean CE towards (B, T-1) `targets`, ignoring -100 and padded positions."""
    return output.mean_nll(next_token_targets(targets.masked_fill(~target_mask(batch), -100)))


def sequence_logprob(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """log π(y) per sequence: the sum of its real tokens' log-probabilities."""
    targets = next_token_targets(batch["labels"][:, 1:])
    return -mean_nll(logits, targets, reduction="none").sum(-1)


def real_lengths(batch: Batch) -> list[int]:
    return batch["attention_mask"].sum(-1).tolist()


class ReferenceCache:
    """Per-example values that depend only on the frozen original model, computed the first time an example is
    seen and reused at every later step.

    Keys are the batch's `example` entries (each row's position in its group: the chunk's identity within the
    run). A missing example is computed with its whole batch, exactly as a per-step computation would, so the
    values are bit-identical to it. A batch without `example` (built outside the trainer) is computed afresh.
    Kept in memory only: `lethe unlearn` runs are not resumed, and recomputing is one forward per example.
    """

    def __init__(self, compute: Callable[[Batch], list[torch.Tensor]]) -> None:
        self.compute, self.values = compute, {}

    def __call__(self, batch: Batch) -> list[torch.Tensor]:
        if "example" not in batch:
            return self.compute(batch)
        keys = batch["example"].tolist()
        if not all(key in self.values for key in keys):
            for key, value in zip(keys, self.compute(batch), strict=True):
                self.values.setdefault(key, value)
        return [self.values[key] for key in keys]


def masked_kl(reference_logits: torch.Tensor, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """KL(P_orig ‖ P_θ) averaged over real positions only (the original code also averaged padding)."""
    ref_logp = torch.log_softmax(reference_logits.float(), -1)
    per_position = F.kl_div(torch.log_softmax(logits.float(), -1), ref_logp, log_target=True, reduction="none").sum(-1)
    mask = F.pad(target_mask(batch), (0, 1), value=False)
    return (per_position * mask).sum() / mask.sum()


class Unlearning:
    """Base: loss = forget term + retain_weight · retain term (gd: CE, kl: KL to the original).

    `reference_tokens` counts the real tokens forwarded through the frozen original model, for the run's cost.
    The KL term's reference distribution is recomputed every step rather than cached: it is V floats per token
    (a 4,096-token chunk of a 128k-vocabulary model: 2 GB in fp32), more than the forward it saves is worth.
    """

    retain_term: str | None = None
    retain_data: str = "in_domain"
    needs_reference = False
    forget_reads_logits = False  # True where the forget term reads `output.logits` rather than `output.mean_nll`

    class Args(Strict):
        """The method's own arguments (none here); their names are keys of `method_args`."""

    def __init__(self, context: MethodContext, args: MethodArgs) -> None:
        self.context, self.retain_weight = context, args.retain_weight
        self.reference_tokens = 0
        self.phases: dict[str, dict] = {}  # per-phase training summaries of a method that trains in several phases
        self.args = self.Args.model_validate({name: getattr(args, name) for name in self.Args.model_fields})
        if args.retain_term is not None:
            self.retain_term = None if args.retain_term == "none" else args.retain_term
        if args.retain_data is not None:
            self.retain_data = args.retain_data
        if (self.needs_reference or self.retain_term == "kl") and context.reference is None:
            raise LetheError(f"{type(self).__name__} needs the frozen original model")

    @classmethod
    def uses_reference(cls, args: MethodArgs) -> bool:
        """Whether the method with `args` reads the frozen original model (its own term, or a KL retain term)."""
        retain_term = cls.retain_term if args.retain_term is None else args.retain_term
        return cls.needs_reference or retain_term == "kl"

    def extra_splits(self, domain: str) -> list[str]:
        """Splits the method reads beyond the forget set and its retain term's split (none here)."""
        return []

    def prepare(self, model: torch.nn.Module, config: UnlearnConfig, pretrain: dict | None) -> None:
        """Called once on the model before training, e.g. to choose which parameters train (nothing here);
        `pretrain`: the training that exact retraining would repeat ({"tokens": ...}), if known."""

    def after_training(self, trainer: Trainer, result: TrainResult, chunks: dict[str, list],
                       config: UnlearnConfig) -> tuple[Trainer, TrainResult]:
        """Phases after the unlearning one, through the same engine (none here): the trainer that holds the final
        model, and the run's whole training (`chunks`: the run's chunks by split)."""
        return trainer, result

    @property
    def reads_logits(self) -> bool:
        return self.forget_reads_logits or self.retain_term == "kl"

    @property
    def groups(self) -> tuple[str, ...]:
        return ("forget", "retain") if self.retain_term else ("forget",)

    def forget_loss(self, output: Prediction, batch: Batch) -> torch.Tensor:
        """The forget term, from the model's output on the forget batch: `output.mean_nll(targets)` for a mean
        cross-entropy (fused with the head where the trainer allows), `output.logits` for anything else."""
        raise NotImplementedError

    def reference_logits(self, batch: Batch) -> torch.Tensor:
        self.reference_tokens += int(batch["attention_mask"].sum())
        with torch.no_grad():
            return logits_of(self.context.reference, batch)

    def __call__(self, model, batches: dict[str, Batch]) -> tuple[torch.Tensor, dict[str, float]]:
        # measured on CPU: one forward over forget and retain together is ~5% slower than two
        outputs = [predict(model, batches[name]) for name in self.groups]
        loss = forget = self.forget_loss(outputs[0], batches["forget"])
        logs = {"forget_loss": forget.item()}
        if self.retain_term is None:
            return loss, {"loss": loss.item(), **logs}
        retain_batch = batches["retain"]
        if self.retain_term == "gd":
            retain = outputs[1].mean_nll(next_token_targets(retain_batch["labels"][:, 1:]))
        else:
            retain = masked_kl(self.reference_logits(retain_batch), outputs[1].logits, retain_batch)
        loss = forget + self.retain_weight * retain
        return loss, {"loss": loss.item(), **logs, f"retain_{self.retain_term}": retain.item()}


@methods.register("ga")
class GradientAscent(Unlearning):
    """Maximise the forget set's next-token loss."""

    def forget_loss(self, output, batch):
        return -output.mean_nll(next_token_targets(batch["labels"][:, 1:]))


@methods.register("random_label")
class RandomLabels(Unlearning):
    """Train towards labels drawn uniformly from the vocabulary; special tokens keep their label."""

    def random_targets(self, batch: Batch) -> torch.Tensor:
        true = batch["input_ids"][:, 1:]
        # seeded by the batch itself, so a resumed run draws the same labels
        generator = torch.Generator().manual_seed(int(true.sum()) * 1_000_003 + true.numel())
        random = torch.randint(0, self.context.vocab_size, true.shape, generator=generator).to(true.device)
        special = torch.isin(true, torch.tensor(self.context.special_ids, device=true.device))
        return torch.where(special, true, random)

    def forget_loss(self, output, batch):
        return cross_entropy_to(output, batch, self.random_targets(batch))


@methods.register("adversarial")
class AdversarialSamples(Unlearning):
    """Train towards a_t = argmax_{a ≠ x_{t+1}} P_orig(a | x_≤t), the original model's best wrong token."""

    needs_reference = True

    def __init__(self, context: MethodContext, args: MethodArgs) -> None:
        super().__init__(context, args)
        self.cached_targets = ReferenceCache(self.targets_per_example)  # once per example, as the original code did

    def adversarial_targets(self, batch: Batch) -> torch.Tensor:
        """(B, T-1) targets, -100 at padded positions."""
        targets = torch.full_like(batch["input_ids"][:, 1:], -100)
        for row, example in enumerate(self.cached_targets(batch)):
            targets[row, :len(example)] = example
        return targets

    def targets_per_example(self, batch: Batch) -> list[torch.Tensor]:
        """Each row's targets at its real predicted positions, from one forward of the original over the batch."""
        logits = self.reference_logits(batch)[:, :-1]
        true = batch["input_ids"][:, 1:]
        targets = logits.scatter(-1, true.unsqueeze(-1), float("-inf")).argmax(-1)
        # int32 copies: 4 bytes per token kept on the device for the whole run
        return [row[:length - 1].to(torch.int32) for row, length in zip(targets, real_lengths(batch), strict=True)]

    def forget_loss(self, output, batch):
        return cross_entropy_to(output, batch, self.adversarial_targets(batch))


@methods.register("ga_gd_in")
class GradientAscentDescentInDomain(GradientAscent):
    retain_term = "gd"


@methods.register("ga_kl_in")
class GradientAscentKLInDomain(GradientAscent):
    retain_term = "kl"


@methods.register("ga_gd_general")
class GradientAscentDescentGeneral(GradientAscent):
    retain_term, retain_data = "gd", "general"


@methods.register("ga_kl_general")
class GradientAscentKLGeneral(GradientAscent):
    retain_term, retain_data = "kl", "general"


@methods.register("npo")
class NegativePreferenceOptimization(Unlearning):
    """NPO (Zhang et al., 2024): −(2/β)·mean log σ(−β·(log π_θ(y) − log π_ref(y)))."""

    needs_reference = forget_reads_logits = True  # per-sequence weights: not a mean cross-entropy

    class Args(Strict):
        npo_beta: float = Field(0.1, gt=0, description="β of NPO")

    def __init__(self, context: MethodContext, args: MethodArgs) -> None:
        super().__init__(context, args)
        self.cached_logprobs = ReferenceCache(lambda batch: list(sequence_logprob(self.reference_logits(batch), batch)))

    def forget_loss(self, output, batch):
        reference = torch.stack(self.cached_logprobs(batch))
        ratio = sequence_logprob(output.logits, batch) - reference
        beta = self.args.npo_beta
        return -(2 / beta) * F.logsigmoid(-beta * ratio).mean()


@methods.register("simnpo")
class SimNPO(Unlearning):
    """SimNPO (Fan et al., 2024): reference-free, length-normalised: −(2/β)·mean log σ(−(β/|y|)·log π_θ(y) − γ)."""

    forget_reads_logits = True

    class Args(Strict):
        simnpo_beta: float = Field(
            0.5, gt=0, description="SimNPO saturates once β·(mean forget NLL) is large; pre-training data has NLL ~2-5")
        simnpo_gamma: float = Field(0.0, ge=0, description="γ (reward margin) of SimNPO")

    def forget_loss(self, output, batch):
        lengths = target_mask(batch).sum(-1).clamp_min(1)
        beta, gamma = self.args.simnpo_beta, self.args.simnpo_gamma
        return -(2 / beta) * F.logsigmoid(-(beta / lengths) * sequence_logprob(output.logits, batch) - gamma).mean()


# methods built to hold against relearning, in modules of their own, registered here with the others
from lethe.unlearning import rmu, undo  # noqa: E402, F401
