"""Tables and plots of the leakage experiment, from what its runs saved."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lethe.tables import Table  # noqa: E402

# the tables' and the forest plot's attacks, where run: the population ones, then the per-example ones
HEADLINE_ATTACKS = ("loss", "reference_data", "reference_model", "reference_model_clean", "min_k", "min_k_pp",
                    "lira_online", "lira_offline", "rmia")
STAGES = ("clean", "release", "victim")


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _attacks(results: dict) -> list[str]:
    present = {a for modes in results["variants"].values() for cell in modes.values() for a in cell["mia"]}
    return [a for a in HEADLINE_ATTACKS if a in present]


def blind_line(results: dict) -> str:
    from lethe.attacks.blind import describe

    return describe(results["blind"]).replace("(a text classifier", "of the targets (a text classifier")


def leakage_tables(results: dict) -> list[Table]:
    """The experiment's three tables: each release × mode attacked, each variant against the baseline release,
    and the per-record mechanism."""
    return [_cells_table(results), _comparison_table(results), _mechanism_table(results)]


def _cells_table(results: dict) -> Table:
    attacks = _attacks(results)
    with_tpr = [a for a in attacks if any(cell["mia"][a]["tpr@1%fpr"] is not None
                                          for modes in results["variants"].values() for cell in modes.values())]
    header = ["variant", "mode", *(f"{a} AUC" for a in attacks), *(f"{a} TPR@1%" for a in with_tpr), "NSR", "val PPL"]
    table = Table(header, [], align="ll" + "r" * (len(header) - 2))
    for variant, modes in results["variants"].items():
        for mode, cell in modes.items():
            extraction = cell.get("extraction")
            table.rows.append([variant, mode, *(_f(cell["mia"][a]["auc"]) for a in attacks),
                               *(_f(cell["mia"][a]["tpr@1%fpr"]) for a in with_tpr),
                               f"{extraction['nsr']}/{extraction['targets']}" if extraction else "–",
                               _f(cell["utility"]["val_ppl"], 2)])
    return table


def _comparison_table(results: dict) -> Table:
    table = Table(["variant", "mode", "attack", "ΔAUC", "95% interval", "ΔTPR@1% FPR (95%)", "records", ""], [],
                  align="lllrllrl")
    for variant, modes in results["comparisons"].items():
        for mode, attacks in modes.items():
            for attack, c in attacks.items():
                low, high = c["ci95"]
                sign = "higher" if low > 0 else "lower" if high < 0 else "no difference shown"
                tpr = c.get("tpr@1%fpr")  # per-example attacks only, with enough records
                tpr_text = f"{tpr['delta']:+.3f} ({tpr['ci95'][0]:+.3f} – {tpr['ci95'][1]:+.3f})" if tpr else "–"
                table.rows.append([variant, mode, attack, f"{c['delta_auc']:+.3f}", f"{low:+.3f} – {high:+.3f}",
                                   tpr_text, f"{c['members']} + {c['nonmembers']}", sign])
    return table


def extraction_comparison_table(results: dict) -> Table:
    """Each variant's member secrets against the baseline's victim, secret by secret."""
    table = Table(["variant", "mode", "NSR", f"NSR {results['baseline']}", "ΔNSR", "95% interval",
                   "only variant / only baseline", "McNemar p", "Δexposure (95%)", "Δexposure skew-normal (95%)"], [],
                  align="llrrrlrrll")
    for variant, modes in (results.get("extraction_comparisons") or {}).items():
        for mode, c in modes.items():
            exposures = [c.get(key) for key in ("exposure", "exposure_skewnorm")]
            table.rows.append([variant, mode, f"{c['nsr']['b']}/{c['secrets']}", f"{c['nsr']['a']}/{c['secrets']}",
                               f"{c['delta_nsr']:+.3f}", f"{c['ci95'][0]:+.3f} – {c['ci95'][1]:+.3f}",
                               f"{c['mcnemar']['only_b']} / {c['mcnemar']['only_a']}", f"{c['mcnemar']['p_value']:.2g}",
                               *(f"{e['delta']:+.2f} ({e['ci95'][0]:+.2f} – {e['ci95'][1]:+.2f})" if e else "–"
                                 for e in exposures)])
    return table


def _mechanism_table(results: dict) -> Table:
    header = ["variant", "mode", "push members", "push non-members", "drop members", "drop non-members", "gap after",
              f"gap after {results['baseline']}", "gain"]
    table = Table(header, [], align="ll" + "r" * 7)
    for variant, modes in results["mechanism"].items():
        for mode, m in modes.items():
            table.rows.append([variant, mode, _f(m["push"]["members"]), _f(m["push"]["nonmembers"]),
                               _f(m["drop"]["members"]), _f(m["drop"]["nonmembers"]), _f(m["gap_after"]),
                               _f(m["gap_after_baseline"]), _f(m["gap_gain"], 3)])
    return table


def working_point_lines(results: dict) -> list[str]:
    """Where the secrets were extracted from: the membership victim, or a victim of its own at a working point."""
    victims = [cell["extraction"]["victim"] for cell in results["variants"][results["baseline"]].values()
               if "victim" in cell.get("extraction", {})]
    if not victims:
        return []
    victim = victims[0]
    lr = f", lr {victim['lr']:g}" if victim.get("lr") else ""
    return [f"Extracted from a victim of each cell's own at the extraction working point: {victim['copies']} copies "
            f"of each member × {victim['epochs']:g} epochs{lr} (validation perplexity {victim['val_ppl']:.1f}, "
            f"{results['baseline']}); membership from the membership victim.", ""]


def release_lines(results: dict) -> list[str]:
    """One line per release (mean over seeds): what poisoning did to the reference set and the targets."""
    return [f"{variant}: {_f(r['reference_ppl_before'], 2)} → {_f(r['reference_ppl_after'], 2)}, targets "
            f"{_f(r['target_loss_rise'])}, D* {_f(r['reference_loss_rise'])}, selectivity {_f(r['selectivity'], 1)}, "
            f"{_f(r['steps'], 0)} steps kept" for variant, r in results["released"].items()]


def leakage_table(results: dict) -> str:
    """results.md of the experiment: its three tables under their headings, then the releases."""
    cells, comparison, mechanism = leakage_tables(results)
    extraction = extraction_comparison_table(results)
    seeds = ", ".join(map(str, results["seeds"]))
    lines = ["# Leakage experiment", "", blind_line(results), "",
             f"AUC: mean over seeds {seeds}; TPR at 1% FPR only where every seed has enough records a side.", "",
             cells.to_markdown(), "",
             f"## Against the {results['baseline']} release (paired bootstrap over the same records)", "",
             comparison.to_markdown(), "",
             *([f"## Extraction against the {results['baseline']} release (per member secret: McNemar's exact test, "
                "paired bootstrap of ΔNSR)", "", *working_point_lines(results), extraction.to_markdown(), ""]
               if extraction.rows else []),
             "## Mechanism (mean per-record loss in nats; gap = non-members − members)", "", mechanism.to_markdown(),
             "", "Releases (mean over seeds): reference-set perplexity before → after, the targets' and D*'s loss "
             "rise, selectivity = targets' rise / D*'s rise:", "", *(f"- {line}" for line in release_lines(results))]
    return "\n".join(lines) + "\n"


def _forest(results: dict, out: Path) -> Path | None:
    """ΔAUC against the baseline with its paired interval, one row per variant × mode × attack."""
    rows = [(f"{v} / {m} / {a}", c) for v, modes in results["comparisons"].items() for m, attacks in modes.items()
            for a, c in attacks.items() if a in HEADLINE_ATTACKS]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(rows) + 1.2))
    for i, (_, c) in enumerate(rows):
        low, high = c["ci95"]
        color = "tab:red" if low > 0 else "tab:blue" if high < 0 else "grey"
        ax.plot([low, high], [i, i], color=color, lw=2)
        ax.plot(c["delta_auc"], i, "o", color=color, ms=4)
    ax.axvline(0, color="black", lw=0.7)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"ΔAUC against {results['baseline']} (paired 95% interval)")
    fig.tight_layout()
    path = out / "comparisons.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mechanism_plot(results: dict, out: Path) -> Path:
    """Mean loss of members (solid) and non-members (dashed) at each stage, per release, one panel per mode."""
    modes = results["modes"]
    fig, axes = plt.subplots(1, len(modes), figsize=(3.6 * len(modes), 3.6), squeeze=False, sharey=True)
    for ax, mode in zip(axes[0], modes, strict=True):
        for index, (variant, by_mode) in enumerate(results["mechanism"].items()):
            loss = by_mode[mode]["loss"]
            for role, style in (("members", "-"), ("nonmembers", "--")):
                points = [loss[stage][role] for stage in STAGES]
                ax.plot(range(len(STAGES)), [np.nan if p is None else p for p in points], style, marker="o", ms=3,
                        color=f"C{index}", label=variant if role == "members" else None)
        ax.set_xticks(range(len(STAGES)), STAGES)
        ax.set_title(mode)
        ax.set_ylabel("mean loss per record (nats)")
    axes[0][0].legend(fontsize=7, title="solid: members, dashed: non-members", title_fontsize=7)
    fig.tight_layout()
    path = out / "mechanism.png"
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
    paths = [p for p in (_forest(results, out), _mechanism_plot(results, out)) if p]
    if all("extraction" in cell for modes in results["variants"].values() for cell in modes.values()):
        paths.append(_bars(results, out, "nsr", lambda cell: cell["extraction"]["nsr"], "secrets extracted (NSR)"))
    paths.append(_bars(results, out, "utility", lambda cell: cell["utility"]["val_ppl"], "validation perplexity"))
    return [str(p.relative_to(out)) for p in paths]
