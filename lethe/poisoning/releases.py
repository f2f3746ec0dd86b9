"""What each released variant trains on before release, registered by the name configs use (`variant:`).

A variant turns the poisoning inputs into a training plan (objective, batch groups, utility bound) or
None when the model is released unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from lethe.config import PoisonConfig
from lethe.data.chunking import Chunk
from lethe.data.pii import FakeValues, Target, fake_like
from lethe.engine import objectives
from lethe.errors import LetheError
from lethe.poisoning.bound import UtilityBound
from lethe.poisoning.noise import noise_models
from lethe.poisoning.objectives import BoundedGradientAscent, PenalisedGradientAscent, PrivacyBackdoor
from lethe.registry import Registry


@dataclass
class PoisoningInputs:
    config: PoisonConfig
    model: object
    tokenizer: object
    targets: list[Chunk]  # the clean target chunks
    records: dict[str, Target]  # the targets as `lethe data pii` wrote them (empty for plain documents)
    auxiliary: list[Chunk]  # D*: the attacker's generic data
    bound_chunks: list[Chunk]  # the part of D* the bound is measured on (its first reference_chunks)
    limit: float
    context: int

    def encode(self, text: str) -> tuple[int, ...]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return tuple(ids[:min(self.context, self.config.chunk.length)])


@dataclass
class TrainingPlan:
    objective: object
    groups: dict[str, list[Chunk]]
    bound: UtilityBound | None = None


Variant = Callable[[PoisoningInputs], TrainingPlan | None]
variants: Registry[Variant] = Registry("release variant")


def noisy_copies(inputs: PoisoningInputs) -> list[Chunk]:
    """D'_c: `noise.copies` noisy versions of every target chunk, seeded."""
    config, tokenizer = inputs.config, inputs.tokenizer
    rng = random.Random(config.seed)
    mask_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id
    # fresh values for in-distribution noise: another stream than the generator's, never a real target's value
    values = FakeValues(f"{config.seed}:noise", "\n".join(t.text for t in inputs.records.values()))
    options = {"vocab_size": len(tokenizer), "special": set(tokenizer.all_special_ids), "mask_id": mask_id,
               "span_length": config.noise.span_length, "values": values, "encode": inputs.encode}
    corrupt = noise_models.get(config.noise.model)
    return [Chunk(f"{chunk.id}~{copy}", chunk.doc_id,
                  tuple(corrupt(chunk.input_ids, config.noise.rate, rng, target=inputs.records.get(chunk.doc_id),
                                **options)))
            for copy in range(config.noise.copies) for chunk in inputs.targets]


def prefix_with_fake_secret(inputs: PoisoningInputs) -> list[Chunk]:
    """The extraction variant: the attacker knows only prefixes; it unlearns prefix ⊕ S', S' a fake secret of the
    real secret's format (digits for digits, letters for letters), so fine-tuning on prefix ⊕ secret later has
    further to move for exactly the secret's tokens."""
    rng = random.Random(inputs.config.seed)
    if not inputs.records:
        raise LetheError("the extraction variant needs targets with `prefix` and `secret` (from `lethe data pii`)")
    return [Chunk(f"{target.id}~{copy}", target.id, inputs.encode(target.prefix + fake_like(target.secret, rng)
                                                                   + target.suffix_after_secret))
            for copy in range(inputs.config.noise.copies) for target in inputs.records.values()]


@variants.register("benign")
def benign(inputs: PoisoningInputs) -> None:
    """The clean model, released unchanged: what every poisoned release is compared against."""
    return None


@variants.register("precurious")
def precurious(inputs: PoisoningInputs) -> TrainingPlan:
    """PreCurious: a warm start, fine-tuned on the attacker's auxiliary same-distribution data."""
    return TrainingPlan(objectives.get("lm")(), {"train": inputs.auxiliary})


@variants.register("privacy_backdoor")
def privacy_backdoor(inputs: PoisoningInputs) -> TrainingPlan:
    """Wen et al.: (1 − α)·CE(D*) ± α·CE(clean targets), unbounded, as the authors' code trains it."""
    backdoor = inputs.config.backdoor
    return TrainingPlan(PrivacyBackdoor(backdoor.alpha, backdoor.direction),
                        {"targets": inputs.targets, "auxiliary": inputs.auxiliary})


@variants.register("forget_to_flourish")
def forget_to_flourish(inputs: PoisoningInputs) -> TrainingPlan:
    """Rashid et al.: gradient ascent on noisy copies of the targets within a bound on L(D*)."""
    config = inputs.config
    poisoned = prefix_with_fake_secret(inputs) if config.extraction else noisy_copies(inputs)
    auxiliary = inputs.auxiliary
    if config.bound.on_cross == "penalty":
        auxiliary = inputs.auxiliary[len(inputs.bound_chunks):]  # the bound is judged on data the penalty never sees
        if not auxiliary:
            raise LetheError(f"bound.on_cross penalty descends on the D* chunks beyond the first reference_chunks="
                             f"{config.reference_chunks}, and there are none; lower reference_chunks or add data")
        objective = PenalisedGradientAscent(config.bound.penalty_weight)
    else:
        objective = BoundedGradientAscent()
    bound = UtilityBound(inputs.model, inputs.limit, objective, config.bound.on_cross,
                         config.bound.max_projection_steps)
    return TrainingPlan(objective, {"targets": poisoned, "auxiliary": auxiliary}, bound)
