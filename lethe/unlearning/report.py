"""Markdown tables and plots for unlearning studies, written from results alone (no model needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lethe.attacks.blind import describe  # noqa: E402
from lethe.tables import Table, number_text  # noqa: E402

SUMMARIES = ("by_domain", "yardstick_agreement", "blind")  # results.json keys that are not a model's row


EXPERIMENT_HEADER = ["model", "PPL forget", "PPL retain", "PPL approx", "PPL general", "MIA AUC", "AUC folded",
                     "TPR@1%FPR", "gap log(f/a)", "Min-K KS", "FLOPs ratio vs pretrain", "forget PPL / retrained",
                     "AUC − retrained"]


def experiment_table(rows: dict[str, dict]) -> Table:
    """One row per model of an unlearning study: perplexity per role, MIA, the approximate gap, cost, and the
    distance to the retrained model."""
    table = Table(EXPERIMENT_HEADER, [])
    for name, m in rows.items():
        if "diverged" in m:
            table.rows.append([name, "diverged"] + [""] * (len(EXPERIMENT_HEADER) - 2))
            continue
        ppl, mia, gap = m["ppl"], m["mia"], m["approx_gap"]
        cost, dist = m.get("cost", {}), m.get("retrain_distance", {})
        ratio = cost.get("ratio_vs_pretrain")
        shown = f"{name} (collapsed)" if m.get("collapsed") else name
        table.rows.append([shown, *(number_text(ppl[role]) for role in ("forget", "retain", "approximate", "general")),
                           *(number_text(value, 3) for value in (mia["auc"], mia["auc_folded"], mia["tpr@1%fpr"],
                                                                 gap["log_ppl_ratio"], gap["mink_ks"])),
                           "–" if ratio is None else f"{ratio:.3g}", number_text(dist.get("forget_ppl_ratio")),
                           number_text(dist.get("mia_auc"), 3)])
    return table


def _bars(by_domain: dict[str, dict], path: Path) -> None:
    domains = list(by_domain)
    fig, axes = plt.subplots(2, len(domains), figsize=(5 * len(domains), 7), squeeze=False)
    for column, domain in enumerate(domains):
        rows = {name: m for name, m in by_domain[domain].items() if "diverged" not in m}
        names = list(rows)
        x = range(len(names))
        ratio = [rows[n]["ppl"]["forget"] / rows[n]["ppl"]["approximate"] for n in names]
        auc = [rows[n]["mia"]["auc"] for n in names]
        top, bottom = axes[0][column], axes[1][column]
        top.bar(x, ratio, color="tab:blue")
        top.axhline(1.0, color="black", lw=0.8, ls="--", label="looks unseen")
        top.set_yscale("log")
        top.set_title(f"{domain}: forget / approximate perplexity")
        top.legend(loc="upper left", fontsize=8)
        bottom.bar(x, auc, color="tab:orange")
        bottom.axhline(0.5, color="black", lw=0.8, ls="--")
        bottom.set_ylim(0, 1)
        bottom.set_title(f"{domain}: Min-K% MIA AUC (forget vs approximate)")
        for axis in (top, bottom):
            axis.set_xticks(list(x), names, rotation=45, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_experiment_report(results: dict, config, out: Path) -> None:
    parts = [f"# Unlearning study: {config.model}", "",
             "Aggregate over domains " + ", ".join(config.domains) + " (mean of each number).", "",
             experiment_table({k: v for k, v in results.items() if k not in SUMMARIES}).to_markdown()]
    for domain, rows in results["by_domain"].items():
        parts += ["", f"## {domain}", "", experiment_table(rows).to_markdown()]
        if results.get("blind", {}).get(domain):
            parts += ["", describe(results["blind"][domain])]
    if "yardstick_agreement" in results:
        parts += ["", "## Does the approximate yardstick agree with exact retraining?", "",
                  "Spearman correlation over methods between |gap to the approximate set| and |log forget-PPL "
                  "ratio to the retrained model| (1 = same ranking):", ""]
        parts += [f"- {d}: {number_text(a['spearman'], 3)} over {a['methods']} methods"
                  for d, a in results["yardstick_agreement"].items()]
    (out / "results.md").write_text("\n".join(parts) + "\n")
    _bars(results["by_domain"], out / "methods.png")


def write_sweep_report(results: dict, out: Path) -> None:
    cells = results["cells"]
    groups = sorted({(c["domain"], c["method"]) for c in cells})
    lrs = sorted({c["lr"] for c in cells})
    steps = sorted({c["steps"] for c in cells})
    lines = ["# Unlearning sweep", "", "| domain | method | lr | steps | forget/approx PPL | utility ratio | MIA AUC |",
             "|---|---|---|---|---|---|---|"]
    for c in cells:
        lines.append(f"| {c['domain']} | {c['method']} | {c['lr']:g} | {c['steps']} | "
                     + ("diverged | – | – |" if c["diverged"] else
                        f"{c['forget_approx_ratio']:.3f} | {c['utility_ratio']:.3f} | {c['mia_auc']:.3f}"
                        f"{' (collapsed)' if c.get('collapsed') else ''} |"))
    (out / "results.md").write_text("\n".join(lines) + "\n")
    for metric, title in (("forget_approx_ratio", "forget / approximate PPL (1 = looks unseen)"),
                          ("utility_ratio", "general PPL before / after (1 = utility kept)")):
        fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.2), squeeze=False)
        for axis, (domain, method) in zip(axes[0], groups, strict=True):
            grid = [[next((c[metric] for c in cells if (c["domain"], c["method"], c["lr"], c["steps"])
                           == (domain, method, lr, s)), None) for s in steps] for lr in lrs]
            values = [[float("nan") if v is None else v for v in row] for row in grid]
            image = axis.imshow(values, cmap="viridis", origin="lower", aspect="auto")
            axis.set_xticks(range(len(steps)), steps)
            axis.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
            axis.set_xlabel("steps")
            axis.set_ylabel("learning rate")
            axis.set_title(f"{method} ({domain})", fontsize=9)
            for i, row in enumerate(values):
                for j, v in enumerate(row):
                    axis.text(j, i, "div" if v != v else f"{v:.2f}", ha="center", va="center", color="white",
                              fontsize=7)
            fig.colorbar(image, ax=axis, fraction=0.046)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out / f"heatmap_{metric}.png", dpi=110)
        plt.close(fig)
