"""`lethe experiment calibrate-extraction`: an extraction working point, fixed before any poisoned run.

An extraction that never fires (NSR 0 for every release) can show no release raising it, and one that
extracts every secret has no room left. So, as the victim is calibrated for membership, on a seed of
its own and from the baseline release only: for every copies × epochs of the grid, D_ft holds each
member secret `copies` times, the victim fine-tunes on it with the study's recipe for `epochs`, and
greedy extraction (with exposure) runs on the member secrets and on the non-member secrets (which it
never saw: the false-positive control). NSR rising with copies is the extraction's sensitivity control.

The rule: among the cells whose member NSR (a share) lies in `target`, the one nearest the middle of
the range; when none does, the one nearest the range (the same distance to the middle), flagged
`in_range: false`. Ties go to fewer copies, then fewer epochs. The cells run in the order `copies` and
`epochs` list them (the likeliest working points first, where a budget may run out) and are shown sorted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from lethe.config import ExtractConfig, LeakageConfig, deep_merge
from lethe.leakage.calibration import choose, warn_if_study_seed
from lethe.leakage.modes import VictimCell
from lethe.leakage.study import Study, read_targets_file, run_seconds, same_secrets, step
from lethe.parallel import run_tasks
from lethe.runs import Run

log = logging.getLogger("lethe")
ROLES = ("member", "nonmember")


def study_of(config: LeakageConfig, out: Path, copies: int, resume: bool) -> Study:
    """The calibration seed's study with `copies` of each member in D_ft: its own PII directory, the shared release."""
    settings = config.model_copy(update={"pii": {**config.pii, "repetitions": copies}})
    study = Study(settings, out, config.extraction_calibration.seed, resume)
    study.pii = study.root / f"pii-copies{copies}"
    return study


def cell_name(copies: int, epochs: float) -> str:
    return f"copies{copies}-epochs{epochs:g}"


def binomial_interval(hits: int, n: int) -> list[float]:
    """Clopper–Pearson exact 95% interval of a share."""
    from scipy.stats import binomtest

    interval = binomtest(hits, n).proportion_ci(0.95, method="exact")
    return [float(interval.low), float(interval.high)]


def _summary(rows: list[dict]) -> dict:
    """NSR with its interval, and the mean of each exposure over the secrets that have one (digit formats)."""
    from lethe.leakage.extraction_comparison import EXPOSURES

    hits = sum(row["hit"] for row in rows)
    means = {key: [row[key] for row in rows if row[key] is not None] for key in EXPOSURES}
    return {"nsr": hits, "secrets": len(rows), "rate": hits / len(rows), "ci95": binomial_interval(hits, len(rows)),
            **{key: float(np.mean(values)) if values else None for key, values in means.items()},
            "exposure_secrets": len(means["exposure"])}


def extraction_cell(study: Study, victim: VictimCell, copies: int, epochs: float) -> dict:
    """One grid cell: the victim's fine-tune, greedy extraction on both sets of secrets, and their per-secret rows."""
    from lethe.attacks.extraction import extract
    from lethe.leakage.extraction_comparison import secret_rows

    config = study.config
    cell = study.root / "cells" / cell_name(copies, epochs)
    tuned = study.victim_finetune(config.baseline, victim, cell, {"train": {"epochs": epochs}})
    settings = deep_merge(deep_merge(config.extract, config.extraction_calibration.extract),
                          {"decoding": {"strategies": ["greedy"], "seed": study.seed}})
    result = {"copies": copies, "epochs": epochs, "val_ppl": tuned["utility"]["val_ppl"]["after"]}
    rows = []
    for role in ROLES:
        extract_config = ExtractConfig(model=str(cell / "finetune" / "model"),
                                       targets=study.pii / f"targets_{role}.jsonl", **settings)
        step(cell / f"extract-{role}s", study.resume, lambda out, c=extract_config: extract(c, out, overwrite=True))
        found = secret_rows(cell / f"extract-{role}s")
        kinds = {t["id"]: t["kind"] for t in read_targets_file(extract_config.targets)}
        mine = [{"copies": copies, "epochs": epochs, "set": role, "id": i, "kind": kinds[i], **found[i]}
                for i in sorted(found)]
        result[f"{role}s"] = _summary(mine)
        rows += mine
    result["rate"] = result["members"]["rate"]  # what the rule reads
    result["seconds"] = round(sum(run_seconds(cell / name) for name in ("finetune", "extract-members",
                                                                         "extract-nonmembers")), 1)
    log.info("extraction calibration, %d copies × %g epochs: member NSR %d/%d, non-member %d/%d", copies, epochs,
             result["members"]["nsr"], result["members"]["secrets"], result["nonmembers"]["nsr"],
             result["nonmembers"]["secrets"])
    return {"cell": result, "rows": rows}


def calibrate_extraction(config: LeakageConfig, out: Path, *, overwrite: bool = False, resume: bool = False) -> dict:
    from lethe.leakage.modes import cells_of
    from lethe.leakage.study import check_targets, tokenizer_of

    calibration = config.extraction_calibration
    warn_if_study_seed(calibration.seed, config.seeds,
                       "the working point is then chosen on the secrets it is judged on")
    with Run.start(out, "experiment calibrate-extraction", config, overwrite=overwrite, resume=resume) as run:
        [victim] = cells_of(config, calibration.mode)
        studies = {copies: study_of(config, out, copies, resume) for copies in calibration.copies}
        for study in studies.values():
            study.build_targets()
            check_targets(study.pii, tokenizer_of(config),
                          {"finetune": study.finetune_config(config.baseline, victim).chunk.length})
        first, *rest = studies.values()
        for study in rest:  # copies change D_ft only: every cell is prompted with the same secrets
            same_secrets(first.pii, study.pii)
        next(iter(studies.values())).release(config.baseline)  # one release: the targets are the same in every cell
        settings = [(copies, epochs) for copies in calibration.copies for epochs in calibration.epochs]
        # every cell is independent; they run in the order the grid lists them, and are shown by copies and epochs
        cells = sorted(run_tasks({f"{copies} copies, {epochs:g} epochs": (extraction_cell, (studies[copies], victim,
                                                                                           copies, epochs))
                                  for copies, epochs in settings}, config.jobs, "extraction cells"),
                       key=lambda cell: (cell["cell"]["copies"], cell["cell"]["epochs"]))
        grid = [cell["cell"] for cell in cells]
        with (out / "secrets.jsonl").open("w") as handle:
            handle.writelines(json.dumps(row) + "\n" for cell in cells for row in cell["rows"])
        chosen = choose(grid, calibration.target, "rate")
        in_range = calibration.target[0] <= chosen["rate"] <= calibration.target[1]
        if not in_range:
            log.warning("no copies × epochs of the grid puts the member NSR in %s; the nearest is shown",
                        calibration.target)
        results = {"seed": calibration.seed, "mode": calibration.mode, "baseline": config.baseline,
                   "target": list(calibration.target), "grid": grid, "chosen": chosen, "in_range": in_range,
                   "secrets_file": "secrets.jsonl",
                   "freeze": {"extraction_victim": {"copies": chosen["copies"], "epochs": chosen["epochs"],
                                                    "lr": first.finetune_config(config.baseline, victim).train.lr}}}
        results["plots"] = [dose_response_plot(results, out)]
        run.write_results(results)
    return results


def dose_response_plot(results: dict, out: Path) -> str:
    """Member NSR (and non-member NSR) against copies, one line per epochs, with the wanted range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.axhspan(*results["target"], color="0.9", label="wanted member NSR")
    for epochs in sorted({cell["epochs"] for cell in results["grid"]}):
        cells = sorted((c for c in results["grid"] if c["epochs"] == epochs), key=lambda c: c["copies"])
        copies = [c["copies"] for c in cells]
        rates = np.array([c["members"]["rate"] for c in cells])
        bounds = np.array([c["members"]["ci95"] for c in cells])
        line = ax.errorbar(copies, rates, yerr=[rates - bounds[:, 0], bounds[:, 1] - rates], marker="o", capsize=3,
                           label=f"members, {epochs:g} epoch{'' if epochs == 1 else 's'}")
        ax.plot(copies, [c["nonmembers"]["rate"] for c in cells], ls=":", marker="x",
                color=line[0].get_color(), label=f"non-members, {epochs:g} epoch{'' if epochs == 1 else 's'}")
    chosen = results["chosen"]
    ax.scatter([chosen["copies"]], [chosen["rate"]], s=160, facecolors="none", edgecolors="k", zorder=5,
               label="chosen")
    ax.set_xscale("log")
    ax.set_xlabel("copies of each member secret in D_ft")
    ax.set_ylabel("greedy NSR (share of secrets)")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "dose_response.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _exposures(side: dict) -> str:
    return "/".join("–" if side.get(key) is None else f"{side[key]:.2f}" for key in ("exposure", "exposure_skewnorm"))


def dose_response_table(results: dict):
    """The grid, one row per copies × epochs cell: the terminal summary and the report show this one table."""
    from lethe.tables import Table

    low, high = results["target"]
    rows = [[str(c["copies"]), f"{c['epochs']:g}", f"{c['members']['nsr']}/{c['members']['secrets']}",
             f"{c['members']['ci95'][0]:.3f}–{c['members']['ci95'][1]:.3f}", _exposures(c["members"]),
             f"{c['nonmembers']['nsr']}/{c['nonmembers']['secrets']}", _exposures(c["nonmembers"]),
             f"{c['val_ppl']:.2f}", "yes" if c == results["chosen"] else ""] for c in results["grid"]]
    return Table(["copies", "epochs", "member NSR", "95% interval", "member exposure", "non-member NSR",
                  "non-member exposure", "validation PPL", "chosen"], rows,
                 f"greedy extraction after {results['mode']} fine-tuning of the {results['baseline']} release on "
                 f"calibration seed {results['seed']}, wanted member NSR {low:.0%}–{high:.0%}: the dose-response "
                 "(exposure as sampled, capped at log2 of the candidates + 1 / its skew-normal extrapolation)")


def working_point(results: dict) -> str:
    """The chosen cell in words, and what to freeze in the study's config."""
    chosen, freeze = results["chosen"], results["freeze"]
    members = chosen["members"]
    return (f"extraction working point: {chosen['copies']} copies × {chosen['epochs']:g} epochs, member NSR "
            f"{members['nsr']}/{members['secrets']}" + ("" if results["in_range"] else ", outside the wanted range: "
                                                        "widen the grid")
            + f"; freeze in the study's config: extraction_victim: {{copies: {freeze['extraction_victim']['copies']}, "
            f"epochs: {freeze['extraction_victim']['epochs']:g}, lr: {freeze['extraction_victim']['lr']:g}}}")
