"""ROC metrics through scikit-learn, with stratified bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc as area_under
from sklearn.metrics import roc_auc_score, roc_curve

from lethe.errors import LetheError

MIA_FPRS = (0.001, 0.01, 0.05)


def fpr_key(fpr: float) -> str:
    return f"tpr@{fpr * 100:g}%fpr"


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Highest TPR at a threshold whose FPR does not exceed `fpr`."""
    fprs, tprs, _ = roc_curve(labels, scores)
    return float(tprs[fprs <= fpr].max())


def rate_text(value: float | None, fpr: float, nonmembers: float | None, digits: int = 3) -> str:
    """A TPR at `fpr` for a table: `n/a (n=…)` with fewer than 1/fpr non-members, where no threshold but the one
    above every non-member has an FPR that low, so the rate says nothing about that FPR."""
    if nonmembers is not None and fpr * nonmembers < 1:
        return f"n/a (n={nonmembers:g})"
    return "–" if value is None else f"{value:.{digits}f}"


def _labelled(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))]),
            np.concatenate([members, nonmembers]))


def roc_metrics(members: np.ndarray, nonmembers: np.ndarray, fprs: tuple[float, ...] = (0.01, 0.05)) -> dict:
    """AUC, Yao et al.'s folded AUC (1 − AUC below 0.5, so 0.5 is ideal), and TPR at low FPR."""
    labels, scores = _labelled(members, nonmembers)
    auc = float(roc_auc_score(labels, scores))
    result = {"auc": auc, "auc_folded": max(auc, 1 - auc), "nonmembers": len(nonmembers)}
    for fpr in fprs:
        result[fpr_key(fpr)] = tpr_at_fpr(labels, scores, fpr)
    return result


def _curve_metrics(labels: np.ndarray, scores: np.ndarray, fprs: tuple[float, ...]) -> list[float]:
    fpr_curve, tpr_curve, _ = roc_curve(labels, scores)
    return [area_under(fpr_curve, tpr_curve)] + [float(tpr_curve[fpr_curve <= f].max()) for f in fprs]


def bootstrap_intervals(members: np.ndarray, nonmembers: np.ndarray, *, fprs: tuple[float, ...] = MIA_FPRS,
                        resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, list[float]]:
    """Percentile intervals of AUC and TPR@FPR, resampling members and non-members separately."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    draws = np.empty((resamples, 1 + len(fprs)))
    for i in range(resamples):
        scores = np.concatenate([rng.choice(members, len(members)), rng.choice(nonmembers, len(nonmembers))])
        draws[i] = _curve_metrics(labels, scores, fprs)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
    names = ["auc"] + [fpr_key(f) for f in fprs]
    return {name: [float(lo), float(hi)] for name, lo, hi in zip(names, low, high, strict=True)}


def mia_metrics(members: np.ndarray, nonmembers: np.ndarray, *, resamples: int = 1000, seed: int = 0) -> dict:
    """The attack-suite summary: AUC and TPR at 0.1/1/5% FPR, each with a bootstrap interval."""
    result = roc_metrics(members, nonmembers, MIA_FPRS)
    if resamples:
        result["ci95"] = bootstrap_intervals(members, nonmembers, resamples=resamples, seed=seed)
    return result


def _wins(members: np.ndarray, nonmembers: np.ndarray) -> np.ndarray:
    """(M, N) Mann–Whitney comparisons: 1 where the member scores higher, 1/2 on a tie; their mean is the AUC."""
    return (members[:, None] > nonmembers[None, :]) + 0.5 * (members[:, None] == nonmembers[None, :])


def _resample_counts(rng: np.random.Generator, size: int, resamples: int) -> np.ndarray:
    """(resamples, size): how often each index is drawn in each resample of `size` draws with replacement."""
    draws = rng.integers(0, size, (resamples, size)) + size * np.arange(resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * size).reshape(resamples, size).astype(np.float64)


def paired_auc_difference_pooled(groups: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], *,
                                 resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """AUC_a − AUC_b averaged over independent groups (e.g. seeds), with a paired, stratified bootstrap interval.

    Each group is (members_a, nonmembers_a, members_b, nonmembers_b): the same records scored against
    victims A and B. A resample draws members and non-members with replacement and uses the same draws
    for A and B, so the variation that records share under both victims cancels in the difference;
    resample r of every group enters the r-th pooled draw. With D = wins_a − wins_b and c_m, c_n the
    per-resample draw counts, each draw's ΔAUC is (c_m D · c_n) / (M N): exact, ties counted 1/2.
    """
    if not groups:
        raise LetheError("a pooled AUC difference needs at least one group")
    rng = np.random.default_rng(seed)
    deltas, pooled, members, nonmembers = [], np.zeros(resamples), 0, 0
    for index, group in enumerate(groups):
        members_a, nonmembers_a, members_b, nonmembers_b = (np.asarray(scores, dtype=np.float64) for scores in group)
        if len(members_a) != len(members_b) or len(nonmembers_a) != len(nonmembers_b):
            raise LetheError(f"A and B must score the same records, but group {index} has {len(members_a)} and "
                             f"{len(members_b)} members, {len(nonmembers_a)} and {len(nonmembers_b)} non-members")
        if not len(members_a) or not len(nonmembers_a):
            raise LetheError(f"group {index} has no members or no non-members")
        difference = _wins(members_a, nonmembers_a) - _wins(members_b, nonmembers_b)
        deltas.append(float(difference.mean()))
        member_counts = _resample_counts(rng, len(members_a), resamples)
        nonmember_counts = _resample_counts(rng, len(nonmembers_a), resamples)
        pooled += ((member_counts @ difference) * nonmember_counts).sum(1) / difference.size
        members, nonmembers = members + len(members_a), nonmembers + len(nonmembers_a)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(pooled / len(groups), [tail, 100 - tail])
    return {"delta_auc": float(np.mean(deltas)), "ci95": [float(low), float(high)], "members": members,
            "nonmembers": nonmembers, "by_group": deltas}


def paired_auc_difference(members_a: np.ndarray, nonmembers_a: np.ndarray, members_b: np.ndarray,
                          nonmembers_b: np.ndarray, *, resamples: int = 1000, seed: int = 0,
                          level: float = 0.95) -> dict:
    """AUC_a − AUC_b of two victims scored on the same records, with a paired stratified bootstrap interval."""
    result = paired_auc_difference_pooled([(members_a, nonmembers_a, members_b, nonmembers_b)],
                                          resamples=resamples, seed=seed, level=level)
    del result["by_group"]
    return result


def paired_tpr_difference_pooled(groups: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], fpr: float, *,
                                 resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """TPR@fpr of A minus B averaged over groups, with the paired stratified bootstrap of
    `paired_auc_difference_pooled` (the same member and non-member draws for A and B)."""
    if not groups:
        raise LetheError("a pooled TPR difference needs at least one group")
    rng = np.random.default_rng(seed)
    deltas, pooled = [], np.zeros(resamples)
    for group in groups:
        members_a, nonmembers_a, members_b, nonmembers_b = (np.asarray(s, dtype=np.float64) for s in group)
        if len(members_a) != len(members_b) or len(nonmembers_a) != len(nonmembers_b):
            raise LetheError("A and B must score the same records")
        labels = np.r_[np.ones(len(members_a)), np.zeros(len(nonmembers_a))]
        deltas.append(tpr_at_fpr(labels, np.r_[members_a, nonmembers_a], fpr)
                      - tpr_at_fpr(labels, np.r_[members_b, nonmembers_b], fpr))
        for r in range(resamples):
            m = rng.integers(0, len(members_a), len(members_a))
            n = rng.integers(0, len(nonmembers_a), len(nonmembers_a))
            pooled[r] += (tpr_at_fpr(labels, np.r_[members_a[m], nonmembers_a[n]], fpr)
                          - tpr_at_fpr(labels, np.r_[members_b[m], nonmembers_b[n]], fpr))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(pooled / len(groups), [tail, 100 - tail])
    return {"delta": float(np.mean(deltas)), "ci95": [float(low), float(high)], "by_group": deltas}
