"""The one way token sequences become a padded batch: training, scoring, generation and candidate scoring."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch


def pad_sequences(sequences: Sequence[Sequence[int]], pad_id: int, *,
                  side: Literal["right", "left"] = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), as wide as the longest sequence. Right padding keeps every token at the
    position it had alone; generation pads on the left so every prompt ends where decoding starts."""
    width = max(len(tokens) for tokens in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, tokens in enumerate(sequences):
        place = slice(0, len(tokens)) if side == "right" else slice(width - len(tokens), width)
        ids[row, place] = torch.tensor(tokens, dtype=torch.long)
        mask[row, place] = 1
    return ids, mask
