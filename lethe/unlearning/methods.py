"""Unlearning methods: objectives over a `forget` batch and, for most, a `retain` batch.

Yao et al. write every method as a forget term plus an optional retain term; each class below
fills in only its forget term and declares its retain term, so the engine runs them all alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lethe.config import MethodArgs
from lethe.engine.objectives import Batch, token_cross_entropy
from lethe.errors import LetheError
from lethe.registry import Registry

methods: Registry[type[Unlearning]] = Registry("unlearning method")


@dataclass
class MethodContext:
    reference: torch.nn.Module | None  # the frozen original model
    special_ids: list[int] = field(default_factory=list)
    vocab_size: int = 0


def next_token_logits(model, batch: Batch) -> torch.Tensor:
    """Logits at positions 0..T-2, each predicting token t+1, in float32."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()


def target_mask(batch: Batch) -> torch.Tensor:
    """True where the predicted token is a real (unpadded) token."""
    return batch["attention_mask"][:, 1:].bool()


def sequence_logprob(model, batch: Batch) -> torch.Tensor:
    """log π(y) per sequence: the sum of its real tokens' log-probabilities."""
    logp = torch.log_softmax(next_token_logits(model, batch), -1)
    token_logp = logp.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    return (token_logp * target_mask(batch)).sum(-1)


def masked_kl(reference, model, batch: Batch) -> torch.Tensor:
    """KL(P_orig ‖ P_θ) averaged over real positions only (the original code also averaged padding)."""
    with torch.no_grad():
        ref_logp = torch.log_softmax(next_token_logits(reference, batch), -1)
    logp = torch.log_softmax(next_token_logits(model, batch), -1)
    per_position = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    mask = target_mask(batch)
    return (per_position * mask).sum() / mask.sum()


def cross_entropy_to(model, batch: Batch, targets: torch.Tensor) -> torch.Tensor:
    """Mean CE towards `targets` (B, T-1), ignoring -100 and padded positions."""
    targets = targets.masked_fill(~target_mask(batch), -100)
    logits = next_token_logits(model, batch)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


class Unlearning:
    """Base: loss = forget term + retain_weight · retain term (gd: CE, kl: KL to the original)."""

    retain_term: str | None = None
    retain_data: str = "in_domain"
    needs_reference = False

    def __init__(self, context: MethodContext, args: MethodArgs) -> None:
        self.context, self.args = context, args
        if args.retain_term is not None:
            self.retain_term = None if args.retain_term == "none" else args.retain_term
        if args.retain_data is not None:
            self.retain_data = args.retain_data
        if (self.needs_reference or self.retain_term == "kl") and context.reference is None:
            raise LetheError(f"{type(self).__name__} needs the frozen original model")

    @property
    def groups(self) -> tuple[str, ...]:
        return ("forget", "retain") if self.retain_term else ("forget",)

    def forget_loss(self, model, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, model, batches: dict[str, Batch]) -> tuple[torch.Tensor, dict[str, float]]:
        forget = self.forget_loss(model, batches["forget"])
        logs = {"forget_loss": forget.item()}
        loss = forget
        if self.retain_term == "gd":
            retain = token_cross_entropy(model, batches["retain"])
        elif self.retain_term == "kl":
            retain = masked_kl(self.context.reference, model, batches["retain"])
        else:
            return loss, {"loss": loss.item(), **logs}
        loss = forget + self.args.retain_weight * retain
        return loss, {"loss": loss.item(), **logs, f"retain_{self.retain_term}": retain.item()}


@methods.register("ga")
class GradientAscent(Unlearning):
    """Maximise the forget set's next-token loss."""

    def forget_loss(self, model, batch):
        return -token_cross_entropy(model, batch)


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

    def forget_loss(self, model, batch):
        return cross_entropy_to(model, batch, self.random_targets(batch))


@methods.register("adversarial")
class AdversarialSamples(Unlearning):
    """Train towards a_t = argmax_{a ≠ x_{t+1}} P_orig(a | x_≤t), the original model's best wrong token."""

    needs_reference = True

    def adversarial_targets(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            logits = next_token_logits(self.context.reference, batch)
        true = batch["input_ids"][:, 1:]
        return logits.scatter(-1, true.unsqueeze(-1), float("-inf")).argmax(-1)

    def forget_loss(self, model, batch):
        return cross_entropy_to(model, batch, self.adversarial_targets(batch))


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

    needs_reference = True

    def forget_loss(self, model, batch):
        with torch.no_grad():
            reference = sequence_logprob(self.context.reference, batch)
        ratio = sequence_logprob(model, batch) - reference
        beta = self.args.npo_beta
        return -(2 / beta) * F.logsigmoid(-beta * ratio).mean()


@methods.register("simnpo")
class SimNPO(Unlearning):
    """SimNPO (Fan et al., 2024): reference-free, length-normalised: −(2/β)·mean log σ(−(β/|y|)·log π_θ(y) − γ)."""

    def forget_loss(self, model, batch):
        lengths = target_mask(batch).sum(-1).clamp_min(1)
        beta, gamma = self.args.simnpo_beta, self.args.simnpo_gamma
        return -(2 / beta) * F.logsigmoid(-(beta / lengths) * sequence_logprob(model, batch) - gamma).mean()
