"""`lethe experiment calibrate`: choose the victim before any poisoned run.

A victim whose baseline attack AUC is already 0.5 has nothing for poisoning to amplify, and one at 1.0
has no room left. So, on a seed of its own (targets and fine-tuning the study never uses) and from the
baseline release only, every learning rate × epochs of the grid fine-tunes a victim; the one whose
loss-attack AUC lies in the target range, nearest its middle, is what to freeze in the study's config.
With `calibration.attack: lira_online`, each grid cell also trains `references` reference victims and
the victim is chosen by LiRA's TPR at 1% FPR instead: a victim calibrated for the loss attack can already
sit at the per-example attack's ceiling, leaving a release no room to raise it.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from lethe.config import CalibrationConfig, LeakageConfig, PiiConfig
from lethe.parallel import run_tasks
from lethe.runs import Run

log = logging.getLogger("lethe")


def choose(grid: list[dict], target: tuple[float, float], key: str = "loss_auc") -> dict:
    """The cell nearest the middle of the target range, preferring cells inside it."""
    low, high = target
    middle = (low + high) / 2
    return min(grid, key=lambda cell: (not low <= cell[key] <= high, abs(cell[key] - middle)))


def calibrated_metric(calibration: CalibrationConfig) -> tuple[str, str]:
    """The grid's key for the calibrated attack's number and the metric of the attack it reads."""
    metric = calibration.metric or ("auc" if calibration.attack == "loss" else "tpr@1%fpr")
    return f"{calibration.attack}_{metric}", metric


def warn_if_study_seed(seed: int, study_seeds: list[int], consequence: str) -> None:
    """A calibration belongs on a seed of its own, or it chooses on the very draws it is then judged on."""
    if seed in study_seeds:
        log.warning("the calibration seed %d is one of the study's seeds: %s", seed, consequence)


def calibrate_victim(config: LeakageConfig, out: Path, *, overwrite: bool = False, resume: bool = False) -> dict:
    from lethe.leakage.modes import cells_of
    from lethe.leakage.study import Study, check_targets, tokenizer_of

    calibration = config.calibration
    warn_if_study_seed(calibration.seed, config.seeds, "the victim is then chosen on the records it is judged on")
    with Run.start(out, "experiment calibrate", config, overwrite=overwrite, resume=resume) as run:
        study = Study(config, out, calibration.seed, resume)
        [victim] = cells_of(config, calibration.mode)
        study.build_targets()
        check_targets(study.pii, tokenizer_of(config),
                      {"finetune": study.finetune_config(config.baseline, victim).chunk.length,
                       "mia": study.mia_config(study.root, study.root).chunk.length})
        study.release(config.baseline)
        lira = calibration.attack != "loss"
        if lira:
            study.build_reference_data()
        key, metric = calibrated_metric(calibration)
        nonmembers = PiiConfig(out=out, **config.pii).nonmembers
        if metric == "tpr@1%fpr" and nonmembers < 100:
            log.warning("calibrating on TPR at 1%% FPR with %d non-members: that is the TPR at no false positive; "
                        "calibration.metric auc is steadier", nonmembers)
        settings = [(lr, epochs) for lr in calibration.lr for epochs in calibration.epochs]
        attacked = partial(study.cell, mia_overrides={"attacks": ["loss", *([calibration.attack] if lira else [])]},
                           extraction=False, references=lira)
        cells = run_tasks({f"lr {lr:g}, {epochs:g} epochs": (attacked, (  # every cell of the grid is independent
            config.baseline, victim, study.root / "cells" / f"lr{lr:g}-epochs{epochs:g}",
            {"train": {"lr": lr, "epochs": epochs}})) for lr, epochs in settings}, config.jobs, "calibration cells")
        grid = []
        for (lr, epochs), result in zip(settings, cells, strict=True):
            calibrated = result["mia"][calibration.attack]
            grid.append({"lr": lr, "epochs": epochs, "loss_auc": result["mia"]["loss"]["auc"],
                         **{f"{calibration.attack}_{name}": calibrated[name] for name in ("auc", "tpr@1%fpr")},
                         "val_ppl": result["utility"]["val_ppl"], "seconds": result["seconds"]})
            log.info("calibration lr %g × %g epochs: %s %.3f", lr, epochs, key, grid[-1][key])
        chosen = choose(grid, calibration.target, key)
        in_range = calibration.target[0] <= chosen[key] <= calibration.target[1]
        if not in_range:
            log.warning("no learning rate × epochs of the grid puts %s in %s; the nearest is shown", key,
                        calibration.target)
        results = {"seed": calibration.seed, "mode": calibration.mode, "baseline": config.baseline,
                   "attack": calibration.attack, "key": key, "metric": metric,
                   "target": list(calibration.target), "grid": grid, "chosen": chosen, "in_range": in_range,
                   "freeze": {"finetune": {"train": {"lr": chosen["lr"], "epochs": chosen["epochs"]}}}}
        run.write_results(results)
    return results


def format_calibration(results: dict) -> str:
    key = results.get("key", "loss_auc")
    extra = "" if key == "loss_auc" else key
    metric = "AUC" if key.endswith("_auc") else "TPR at 1% FPR"
    label = f"{'loss-attack' if results['attack'] == 'loss' else results['attack']} {metric}"
    lines = [f"victim calibration on seed {results['seed']} ({results['mode']} fine-tuning of the "
             f"{results['baseline']} release), wanted {label} {results['target'][0]}–{results['target'][1]}",
             f"{'lr':>10} {'epochs':>7} {'loss AUC':>9}{extra:>{len(extra) and 22}} {'val PPL':>9}"]
    for cell in results["grid"]:
        mark = "  <- chosen" if cell == results["chosen"] else ""
        value = f"{cell[key]:>22.3f}" if extra else ""
        lines.append(f"{cell['lr']:>10g} {cell['epochs']:>7g} {cell['loss_auc']:>9.3f}{value} {cell['val_ppl']:>9.2f}"
                     f"{mark}")
    train = results["freeze"]["finetune"]["train"]
    frozen = f"finetune: {{train: {{lr: {train['lr']:g}, epochs: {train['epochs']:g}}}}}"
    lines.append(f"freeze in the study's config: {frozen}"
                 + ("" if results["in_range"] else "  (outside the wanted range: widen the grid)"))
    return "\n".join(lines)
