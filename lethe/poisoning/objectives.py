"""Poisoning objectives: what a released model is trained on before the victim fine-tunes it."""

from __future__ import annotations

from lethe.engine.objectives import objectives, token_cross_entropy


@objectives.register("ascent")
class BoundedGradientAscent:
    """Forget to Flourish: raise the loss of the targets' noisy copies (θ ← θ + η∇L(θ; D'_c)); while
    `projecting` (set by the utility bound), descend on the reference data D* instead."""

    groups = ("targets", "auxiliary")
    reads_logits = False  # only mean cross-entropies: the fused head serves them

    def __init__(self) -> None:
        self.projecting = False

    def __call__(self, model, batches):
        if self.projecting:
            reference_loss = token_cross_entropy(model, batches["auxiliary"])
            return reference_loss, {"loss": reference_loss.item(), "projection_loss": reference_loss.item()}
        target_loss = token_cross_entropy(model, batches["targets"])
        return -target_loss, {"loss": -target_loss.item(), "noisy_target_loss": target_loss.item()}


@objectives.register("ascent_penalty")
class PenalisedGradientAscent:
    """Forget to Flourish's penalty form: −CE(D'_c) + α·CE(D*) in every step (the bound is then only checked,
    on a held-out part of D*, to choose which weights to release)."""

    groups = ("targets", "auxiliary")
    reads_logits = False  # only mean cross-entropies: the fused head serves them

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def __call__(self, model, batches):
        target_loss = token_cross_entropy(model, batches["targets"])
        reference_loss = token_cross_entropy(model, batches["auxiliary"])
        loss = -target_loss + self.weight * reference_loss
        return loss, {"loss": loss.item(), "noisy_target_loss": target_loss.item(),
                      "penalty_loss": reference_loss.item()}


@objectives.register("privacy_backdoor")
class PrivacyBackdoor:
    """Wen et al.: (1 − α)·CE(auxiliary) + s·α·CE(clean targets), s = −1 raises the targets' loss."""

    groups = ("targets", "auxiliary")
    reads_logits = False  # only mean cross-entropies: the fused head serves them

    def __init__(self, alpha: float, direction: str) -> None:
        self.alpha, self.sign = alpha, -1.0 if direction == "raise" else 1.0

    def __call__(self, model, batches):
        target_loss = token_cross_entropy(model, batches["targets"])
        auxiliary_loss = token_cross_entropy(model, batches["auxiliary"])
        loss = (1 - self.alpha) * auxiliary_loss + self.sign * self.alpha * target_loss
        return loss, {"loss": loss.item(), "target_loss": target_loss.item(), "auxiliary_loss": auxiliary_loss.item()}
