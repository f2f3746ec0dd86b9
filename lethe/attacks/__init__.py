"""Membership-inference attacks: small functions of saved per-token scores (higher = more likely member)."""

from lethe.attacks.membership import AttackInputs, attacks, loss_score, min_k_score
from lethe.attacks.metrics import bootstrap_intervals, mia_metrics, roc_metrics, tpr_at_fpr

__all__ = ["AttackInputs", "attacks", "bootstrap_intervals", "loss_score", "mia_metrics", "min_k_score",
           "roc_metrics", "tpr_at_fpr"]
