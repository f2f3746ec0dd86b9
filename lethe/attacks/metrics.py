"""ROC metrics through scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Highest TPR at a threshold whose FPR does not exceed `fpr`."""
    fprs, tprs, _ = roc_curve(labels, scores)
    return float(tprs[fprs <= fpr].max())


def roc_metrics(members: np.ndarray, nonmembers: np.ndarray, fprs: tuple[float, ...] = (0.01, 0.05)) -> dict:
    """AUC, Yao et al.'s folded AUC (1 − AUC below 0.5, so 0.5 is ideal), and TPR at low FPR."""
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    scores = np.concatenate([members, nonmembers])
    auc = float(roc_auc_score(labels, scores))
    result = {"auc": auc, "auc_folded": max(auc, 1 - auc)}
    for fpr in fprs:
        result[f"tpr@{fpr * 100:g}%fpr"] = tpr_at_fpr(labels, scores, fpr)
    return result
