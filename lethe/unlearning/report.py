"""Markdown tables and plots for unlearning studies, written from results alone (no model needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lethe.attacks.blind import describe  # noqa: E402
from lethe.attacks.metrics import rate_text  # noqa: E402
from lethe.tables import Table, number_text  # noqa: E402

SUMMARIES = ("by_domain", "yardstick_agreement", "blind", "requests")  # results.json keys that are not a model's row


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
                           number_text(mia["auc"], 3), number_text(mia["auc_folded"], 3),
                           rate_text(mia["tpr@1%fpr"], 0.01, mia.get("nonmembers")),
                           *(number_text(value, 3) for value in (gap["log_ppl_ratio"], gap["mink_ks"])),
                           "–" if ratio is None else f"{ratio:.3g}", number_text(dist.get("forget_ppl_ratio")),
                           number_text(dist.get("mia_auc"), 3)])
    return table


def _log_rise(m: dict, original: dict) -> float:
    return math.log(m["ppl"]["forget"] / original["ppl"]["forget"])


def attack_table(rows: dict[str, dict]) -> Table | None:
    """The method × attack table: each model's forgetting, and how much of it survives quantization and
    relearning, beside the exact retrain's numbers (None when the study ran no attack)."""
    attacked = {name: m for name, m in rows.items()
                if "diverged" not in m and any(key in m for key in ("quantized", "relearn", "verbmem"))}
    if not attacked or "original" not in rows:
        return None
    table = Table(["model", "forgetting", "forget PPL / retrain's", "PrivLeak", "forget quality", "kept at int8",
                   "kept at int4", "int4 / retrain's", "relearned (forget set)", "beyond retrain", "then / retrain's",
                   "relearned (retain only)", "verbatim ROUGE-L"], [],
                  caption="forgetting: log(forget PPL / original's); kept at intN: the share of it left when model and "
                  "original are both rounded to N bits; relearned: the share a few fine-tuning steps undo (on part of "
                  "the forget set, or on retain text only), and beyond retrain: minus what the exact retrain gains "
                  "from the same steps; / retrain's: the forget perplexity of the attacked model over the retrain's "
                  "attacked alike (below 1: it knows the forget set better than a model that never saw it), with a "
                  "95% interval over the same documents resampled; PrivLeak: "
                  "(AUC − retrain's AUC) / retrain's; forget quality: KS p-value of per-sample forget losses against "
                  "the retrain's")
    for name, m in attacked.items():
        distance, quantized, relearn = m.get("retrain_distance", {}), m.get("quantized", {}), m.get("relearn", {})
        table.rows.append([name, number_text(_log_rise(m, rows["original"]), 3),
                           _with_interval(distance, "forget_ppl_ratio"), number_text(distance.get("privleak"), 3),
                           number_text(distance.get("forget_quality"), 3),
                           *(number_text(quantized.get(bits, {}).get("forgetting_kept"), 3)
                             for bits in ("int8", "int4")),
                           number_text(quantized.get("int4", {}).get("forget_ppl_ratio")),
                           number_text(relearn.get("forget_set", {}).get("recovered"), 3),
                           number_text(relearn.get("forget_set", {}).get("recovered_beyond_retrain"), 3),
                           _with_interval(relearn.get("forget_set", {}), "forget_ppl_ratio"),
                           number_text(relearn.get("retain_only", {}).get("recovered"), 3),
                           number_text(m.get("verbmem", {}).get("rouge_l"), 3)])
    return table


def _with_interval(row: dict, key: str) -> str:
    """A ratio to the retrain and, where saved, its paired 95% interval."""
    interval = row.get(f"{key}_ci95")
    return number_text(row.get(key)) + (f" {_interval(interval)}" if interval else "")


def _interval(values: list[float] | None) -> str:
    return "–" if not values else f"[{values[0]:.2f}, {values[1]:.2f}]"


def u_mia_table(rows: dict[str, dict]) -> Table | None:
    """The per-example unlearning MIA, one row per model it attacked (None when the study ran none)."""
    found = {name: m["u_mia"] for name, m in rows.items() if "u_mia" in m}
    if not found:
        return None
    table = Table(["model", "U-MIA AUC", "95% CI", "TPR@1%FPR", "forget docs detected", "approx docs detected",
                   "AUC − retrain's", "95% CI", "offline AUC"], [],
                  caption="LiRA online per document against shadows unlearned with the model's own method (original "
                  "and retrained: the shadows as trained); members: forget documents, non-members: approximate ones; "
                  "detected: the share whose own test rejects at 1% FPR; AUC − retrain's: paired, same documents")
    for name, u in found.items():
        if "skipped" in u:
            table.rows.append([name, "skipped: a shadow diverged (results.json says how)"] + [""] * 7)
            continue
        paired = u.get("auc_minus_retrain", {})
        table.rows.append([name, number_text(u["auc"], 3), _interval(u.get("ci95")),
                           rate_text(u["tpr@1%fpr"], 0.01, u.get("approximate_documents")),
                           number_text(u["detected_share"], 3), number_text(u["approximate_detected_share"], 3),
                           number_text(paired.get("difference"), 3), _interval(paired.get("ci95")),
                           number_text(u["offline_auc"], 3)])
    return table


def requests_table(answers: dict[str, dict[str, list[dict]]]) -> Table:
    """Sequential and growing deletion requests: forgetting of what was asked, and utility, after each."""
    table = Table(["method", "requests", "after", "documents", "forgetting (asked so far)", "pending forgetting",
                   "MIA AUC", "general PPL", "utility ratio"], [],
                  caption="forgetting: log(forget PPL / original's) on the documents asked so far (sequential) or "
                  "in the request (growing); pending: on the documents not asked yet; utility ratio: original's "
                  "general PPL / the model's")
    for method, answer in answers.items():
        for row in answer.get("sequential", []):
            asked = row.get("asked_so_far", row)
            table.rows.append([method, "sequential", f"request {row['request']}", str(asked.get("documents", "")),
                               *_request_cells(asked, row.get("pending_forget_ppl_rise"), row.get("diverged"))])
        for row in answer.get("growing", []):
            table.rows.append([method, "growing", f"share {row['share']:g}", str(row.get("documents", "")),
                               *_request_cells(row, None, row.get("diverged"))])
    return table


def _request_cells(row: dict, pending: float | None, diverged: str | None) -> list[str]:
    if diverged:
        return ["diverged", "", "", "", ""]
    return [number_text(row["forget_ppl_rise"], 3), number_text(pending, 3), number_text(row["mia_auc"], 3),
            number_text(row["general_ppl"]), number_text(row["utility_ratio"], 3)]


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
             experiment_table(aggregate := {k: v for k, v in results.items() if k not in SUMMARIES}).to_markdown()]
    if (attacks := attack_table(aggregate)) is not None:
        parts += ["", "### Does the forgetting hold? (mean over domains)", "", attacks.to_markdown()]
    for domain, rows in results["by_domain"].items():
        parts += ["", f"## {domain}", "", experiment_table(rows).to_markdown()]
        if results.get("blind", {}).get(domain):
            parts += ["", describe(results["blind"][domain])]
        if (attacks := attack_table(rows)) is not None:
            parts += ["", f"### {domain}: does the forgetting hold?", "", attacks.to_markdown()]
        if (u_mia := u_mia_table(rows)) is not None:
            parts += ["", f"### {domain}: per-example unlearning MIA", "", u_mia.to_markdown()]
    for domain, answers in results.get("requests", {}).items():
        parts += ["", f"## {domain}: sequential and growing deletion requests", "",
                  requests_table(answers).to_markdown()]
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
