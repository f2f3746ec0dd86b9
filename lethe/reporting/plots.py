"""Figures drawn from saved numbers only (results.json, per-sample scores), for what a run did not plot itself."""

from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lethe.reporting.document import Figure  # noqa: E402


def saved_png(path: Path, caption: str) -> Figure | None:
    return Figure(png=path.read_bytes(), caption=caption, name=path.name) if path.is_file() else None


def _figure(fig, caption: str, name: str) -> Figure:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return Figure(png=buffer.getvalue(), caption=caption, name=name)


def roc_from_scores(run_dir: Path) -> list[Figure]:
    """ROC curves rebuilt from scores/attack_scores.jsonl, drawn by the attack's own plotting code."""
    from lethe.attacks.mia_suite import load_sample_scores
    from lethe.attacks.plots import plot_roc

    with tempfile.TemporaryDirectory() as tmp:
        paths = plot_roc(load_sample_scores(run_dir), Path(tmp))
        return [Figure(png=p.read_bytes(), caption=f"ROC ({p.stem}), redrawn from the saved per-sample scores",
                       name=p.name) for p in paths]


def loss_curve(history: list[dict], title: str) -> Figure | None:
    points = [(h["step"], h["loss"]) for h in history if "step" in h and "loss" in h]
    if len(points) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(*zip(*points, strict=True), marker=".", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    return _figure(fig, f"{title}: training loss per logged step", "loss.png")


def tradeoff(points: dict[str, list[tuple[float, float]]], title: str) -> Figure | None:
    """Forgetting against utility kept, one (forget PPL / approximate PPL, general PPL before / after) per point;
    two points per label read as a path (original → unlearned)."""
    points = {label: xy for label, xy in points.items() if xy}
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, xy in points.items():
        gaps = [math.log(ratio) for ratio, _ in xy]
        ax.plot(gaps, [kept for _, kept in xy], marker="o", ls="-" if len(xy) == 2 else "", label=label, alpha=0.85)
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("forgetting: log(forget PPL / approximate PPL), 0 = looks unseen")
    ax.set_ylabel("utility kept: general PPL before / after")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return _figure(fig, f"{title}: the forgetting–utility trade-off (ideal: x = 0, y = 1)", "tradeoff.png")
