"""Noise models that turn target records into the noisy copies D'_c that Forget to Flourish unlearns.

Each changes a stated fraction of a sample's tokens (special tokens are never touched), seeded.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from lethe.registry import Registry

NoiseModel = Callable[..., list[int]]
noise_models: Registry[NoiseModel] = Registry("noise model")


def _editable(ids: Sequence[int], special: set[int]) -> list[int]:
    return [i for i, token in enumerate(ids) if token not in special]


def _count(editable: int, rate: float) -> int:
    return min(editable, round(rate * editable))


@noise_models.register("random_tokens")
def random_tokens(ids: Sequence[int], rate: float, rng: random.Random, vocab_size: int, special: set[int],
                  **_) -> list[int]:
    """Replace `rate` of the tokens, at random positions, with a different random vocabulary token."""
    out = list(ids)
    positions = _editable(ids, special)
    for i in rng.sample(positions, _count(len(positions), rate)):
        replacement = rng.randrange(vocab_size - 1)
        out[i] = replacement + (replacement >= ids[i])  # uniform over every token but the original
    return out


@noise_models.register("span_mask")
def span_mask(ids: Sequence[int], rate: float, rng: random.Random, mask_id: int, special: set[int],
              span_length: int = 3, **_) -> list[int]:
    """Overwrite spans of `span_length` tokens with `mask_id` until `rate` of the tokens are masked
    (a causal LM has no mask token of its own: the tokenizer's unknown or end-of-text token stands in)."""
    out = list(ids)
    positions = [i for i in _editable(ids, special) if ids[i] != mask_id]
    target = _count(len(positions), rate)
    unmasked = set(positions)
    while target - (len(positions) - len(unmasked)) > 0:
        start = rng.choice(sorted(unmasked))
        room = target - (len(positions) - len(unmasked))
        for i in range(start, min(start + span_length, len(ids))):
            if i in unmasked and room > 0:
                out[i] = mask_id
                unmasked.discard(i)
                room -= 1
    return out


@noise_models.register("word_shuffle")
def word_shuffle(ids: Sequence[int], rate: float, rng: random.Random, special: set[int], **_) -> list[int]:
    """Move `rate` of the tokens: the chosen positions trade tokens by a cyclic shift of a random order,
    so every chosen token lands somewhere else (a position keeps its token only if both are equal)."""
    out = list(ids)
    positions = rng.sample(_editable(ids, special), _count(len(_editable(ids, special)), rate))
    if len(positions) > 1:
        for source, target in zip(positions, positions[1:] + positions[:1], strict=True):
            out[target] = ids[source]
    return out
