"""Attack scores computed from `TokenScores`, never from a new forward pass.

Convention (as in MIMIR): a higher score means "more likely a member".
"""

from __future__ import annotations

import numpy as np

from lethe.registry import Registry
from lethe.scoring import TokenScores

attacks: Registry = Registry("attack")


@attacks.register("loss")
def loss_score(scores: TokenScores) -> np.ndarray:
    """LOSS (Yeom et al.): minus the mean token NLL."""
    return -scores.sample_nll()


@attacks.register("min_k")
def min_k_score(scores: TokenScores, k: float = 20) -> np.ndarray:
    """Min-K% Prob (Shi et al.): mean log-prob of the K% least likely tokens of each sample."""
    out = np.empty(len(scores))
    for i in range(len(scores)):
        logp = scores.sample(i).astype(np.float64)
        count = max(1, int(len(logp) * k / 100))
        out[i] = np.partition(logp, count - 1)[:count].mean()
    return out
