"""Noise models that turn target records into the noisy copies D'_c that Forget to Flourish unlearns.

The token models change a stated fraction of a sample's tokens (special tokens are never touched);
`in_distribution` keeps a PII record's template and replaces every value by a fresh fake of its field.
All are seeded.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from lethe.errors import LetheError
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


@noise_models.register("in_distribution")
def in_distribution(ids: Sequence[int], rate: float, rng: random.Random, target=None, values=None, encode=None,
                    **_) -> list[int]:
    """The same record with every PII value replaced by a fresh one of its field (the template stays, the
    identity does not): noise that stays in the targets' distribution, unlike random vocabulary tokens."""
    from lethe.data.pii import with_fresh_values

    if target is None:
        raise LetheError("noise model in_distribution needs the targets as records written by `lethe data pii`")
    return list(encode(with_fresh_values(target, values)))


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
