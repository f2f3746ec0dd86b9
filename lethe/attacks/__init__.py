"""Membership-inference attacks: small functions of saved per-token scores (higher = more likely member)."""

from lethe.attacks.membership import attacks, loss_score, min_k_score
from lethe.attacks.metrics import roc_metrics, tpr_at_fpr

__all__ = ["attacks", "loss_score", "min_k_score", "roc_metrics", "tpr_at_fpr"]
