"""ROC metrics through scikit-learn, with stratified bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc as area_under
from sklearn.metrics import roc_auc_score, roc_curve

MIA_FPRS = (0.001, 0.01, 0.05)


def fpr_key(fpr: float) -> str:
    return f"tpr@{fpr * 100:g}%fpr"


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Highest TPR at a threshold whose FPR does not exceed `fpr`."""
    fprs, tprs, _ = roc_curve(labels, scores)
    return float(tprs[fprs <= fpr].max())


def _labelled(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))]),
            np.concatenate([members, nonmembers]))


def roc_metrics(members: np.ndarray, nonmembers: np.ndarray, fprs: tuple[float, ...] = (0.01, 0.05)) -> dict:
    """AUC, Yao et al.'s folded AUC (1 − AUC below 0.5, so 0.5 is ideal), and TPR at low FPR."""
    labels, scores = _labelled(members, nonmembers)
    auc = float(roc_auc_score(labels, scores))
    result = {"auc": auc, "auc_folded": max(auc, 1 - auc)}
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
