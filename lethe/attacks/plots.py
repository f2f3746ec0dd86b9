"""ROC curves of every attack, linear and log-log (the low-FPR regime is where attacks differ)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402


def plot_roc(sample_scores: dict[str, dict[str, np.ndarray]], out_dir: Path, title: str = "") -> list[Path]:
    """sample_scores: attack → {"members": scores, "nonmembers": scores}. Writes roc.png and roc_loglog.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for scale in ("linear", "log"):
        fig, ax = plt.subplots(figsize=(5, 5))
        for name, sets in sample_scores.items():
            labels = np.concatenate([np.ones(len(sets["members"])), np.zeros(len(sets["nonmembers"]))])
            scores = np.concatenate([sets["members"], sets["nonmembers"]])
            fpr, tpr, _ = roc_curve(labels, scores)
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(labels, scores):.3f})")
        floor = 1 / max(len(s["nonmembers"]) for s in sample_scores.values())
        ax.plot([floor, 1], [floor, 1], ls="--", color="grey", lw=0.8)
        if scale == "log":
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(floor / 2, 1)
            ax.set_ylim(floor / 2, 1.05)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_title(title or f"membership inference ROC ({scale})")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = out_dir / ("roc.png" if scale == "linear" else "roc_loglog.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
