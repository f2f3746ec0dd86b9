"""Tables and plots of the leakage experiment, from what its runs saved."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from lethe.attacks.mia import load_sample_scores  # noqa: E402

HEADLINE_ATTACKS = ("loss", "reference_model", "min_k")


def leakage_table(results: dict) -> str:
    attacks = [a for a in HEADLINE_ATTACKS
               if any(a in cell["mia"] for modes in results["variants"].values() for cell in modes.values())]
    header = " | ".join(f"{a} AUC | {a} TPR@1%" for a in attacks)
    lines = ["# Leakage experiment", "",
             f"| variant | mode | {header} | NSR | rate | val PPL |",
             "|---|---|" + "---:|" * (2 * len(attacks) + 3)]
    for variant, modes in results["variants"].items():
        for mode, cell in modes.items():
            mia = " | ".join(f"{cell['mia'][a]['auc']:.3f} | {cell['mia'][a]['tpr@1%fpr']:.3f}" if a in cell["mia"]
                             else "– | –" for a in attacks)
            extraction = cell["extraction"]
            lines.append(f"| {variant} | {mode} | {mia} | {extraction['nsr']}/{extraction['targets']} | "
                         f"{extraction['rate']:.2f} | {cell['utility']['val_ppl']:.2f} |")
    lines += ["", "Released models (reference-set perplexity before → after poisoning):", ""]
    for variant, released in results["released"].items():
        utility = released["utility"]
        lines.append(f"- {variant}: {utility['reference_ppl_before']:.2f} → {utility['reference_ppl_after']:.2f} "
                     f"(bound on the loss: {released['bound']['limit']:.4f}, "
                     f"enforced: {released['bound']['enforced']})")
    return "\n".join(lines) + "\n"


def _roc_overlays(results: dict, out: Path, attack: str) -> Path:
    modes = results["modes"]
    fig, axes = plt.subplots(1, len(modes), figsize=(4 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        for variant in results["variants"]:
            scores = load_sample_scores(out / "cells" / variant / mode / "mia").get(attack)
            if scores is None:
                continue
            labels = np.r_[np.ones(len(scores["members"])), np.zeros(len(scores["nonmembers"]))]
            fpr, tpr, _ = roc_curve(labels, np.r_[scores["members"], scores["nonmembers"]])
            auc = results["variants"][variant][mode]["mia"][attack]["auc"]
            ax.plot(fpr, tpr, label=f"{variant} ({auc:.2f})", ls="--" if variant == "benign" else "-")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.6)
        ax.set_title(f"{mode}: {attack} attack")
        ax.set_xlabel("FPR")
        ax.set_ylabel("TPR")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / f"roc_{attack}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(results: dict, out: Path, name: str, value, ylabel: str) -> Path:
    variants, modes = list(results["variants"]), results["modes"]
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(1.6 * len(modes) + 2, 3.5))
    for i, variant in enumerate(variants):
        heights = [value(results["variants"][variant][mode]) for mode in modes]
        ax.bar(np.arange(len(modes)) + i * width, heights, width, label=variant)
    ax.set_xticks(np.arange(len(modes)) + width * (len(variants) - 1) / 2, modes)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_leakage_report(results: dict, out: Path) -> list[str]:
    (out / "results.md").write_text(leakage_table(results))
    paths = [_roc_overlays(results, out, attack) for attack in ("loss", "reference_model")
             if all(attack in cell["mia"] for modes in results["variants"].values() for cell in modes.values())]
    paths.append(_bars(results, out, "nsr", lambda cell: cell["extraction"]["nsr"], "secrets extracted (NSR)"))
    paths.append(_bars(results, out, "utility", lambda cell: cell["utility"]["val_ppl"], "validation perplexity"))
    return [str(p.relative_to(out)) for p in paths]
