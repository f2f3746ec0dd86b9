"""What the leakage grid measured, rebuilt from its saved per-record scores alone.

- blind: can a model-free text classifier tell each seed's members from its non-members? (It must not:
  then an attack's AUC is evidence of membership and not of a difference in the texts.)
- comparisons: every variant against the baseline release on the same records, ΔAUC with a paired
  bootstrap over records (both victims score the same targets; seeds are strata); for the per-example
  attacks also ΔTPR at 1% FPR, paired the same way, where every seed has tpr_min_records non-members;
- extraction_comparisons: every variant against the baseline per member secret (McNemar's exact test,
  ΔNSR with a paired bootstrap interval, exposure beside it; lethe.leakage.extraction_comparison);
- mechanism: per record, its loss under the clean model, the release, the victim and the baseline's
  victim: how far poisoning pushed members and non-members, and how far fine-tuning pulled them apart.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from lethe.attacks.metrics import paired_auc_difference_pooled, paired_tpr_difference_pooled
from lethe.config import BlindConfig, LeakageConfig
from lethe.runs import read_json, write_json
from lethe.scoring import TokenScores

log = logging.getLogger("lethe")
SETS = ("members", "nonmembers")
PER_EXAMPLE = ("lira_online", "lira_offline", "rmia")


def blind_of_seed(pii_dir: Path, config: BlindConfig, seed: int, path: Path, resume: bool) -> dict:
    from lethe.attacks.blind import blind_baseline
    from lethe.leakage.study import read_targets_file

    if resume and path.is_file():
        return read_json(path)
    texts = {role: [t["text"] for t in read_targets_file(pii_dir / f"targets_{role.removesuffix('s')}.jsonl")]
             for role in SETS}
    result = blind_baseline(texts["members"], texts["nonmembers"], folds=config.folds,
                            permutations=config.permutations, seed=seed)
    write_json(path, result)
    return result


def pooled_blind(by_seed: dict) -> dict:
    """Mean AUC over seeds against the null of that mean (the seeds' permutation draws averaged index by index)."""
    from lethe.attacks.blind import against_null

    blinds = [result["blind"] for result in by_seed.values()]
    null = np.mean([b["null"] for b in blinds], axis=0)
    auc = float(np.mean([b["auc"] for b in blinds]))
    low, high = np.percentile(null, [2.5, 97.5])
    return {"auc": auc, "ci95": [float(low), float(high)], **against_null(auc, float(low), float(high)),
            "by_seed": {seed: {k: b[k] for k in ("auc", "ci95", "p_value", "separable")}
                        for seed, b in zip(by_seed, blinds, strict=True)}}


def attack_scores(mia_dir: Path) -> dict[str, dict[str, tuple[list[str], np.ndarray]]]:
    """Per attack and set: the record ids and the attack's per-record scores, as `lethe attack mia` saved them."""
    rows = [json.loads(line) for line in (mia_dir / "scores" / "attack_scores.jsonl").read_text().splitlines()]
    names = [k for k in rows[0] if k not in ("id", "set", "member", "tokens")]
    return {name: {role: ([r["id"] for r in rows if r["set"] == role],
                          np.array([r[name] for r in rows if r["set"] == role])) for role in SETS} for name in names}


def _cell_dir(out: Path, seed: int, variant: str, mode: str) -> Path:
    return out / f"seed-{seed}" / "cells" / variant / mode


def comparisons(config: LeakageConfig, out: Path, modes: list[str]) -> dict:
    """comparisons.<variant>.<mode>.<attack> = ΔAUC against the baseline, paired over the same records."""
    found: dict = {}
    for variant in config.variants:
        if variant == config.baseline:
            continue
        for mode in modes:
            scores = {seed: (attack_scores(_cell_dir(out, seed, variant, mode) / "mia"),
                             attack_scores(_cell_dir(out, seed, config.baseline, mode) / "mia"))
                      for seed in config.seeds}
            for attack in next(iter(scores.values()))[0]:
                groups = []
                for seed, (ours, theirs) in scores.items():
                    for role in SETS:
                        if ours[attack][role][0] != theirs[attack][role][0]:
                            raise ValueError(f"seed {seed}: {variant} and {config.baseline} scored different "
                                             f"{role} under {mode}")
                    groups.append((ours[attack]["members"][1], ours[attack]["nonmembers"][1],
                                   theirs[attack]["members"][1], theirs[attack]["nonmembers"][1]))
                found.setdefault(variant, {}).setdefault(mode, {})[attack] = paired_auc_difference_pooled(
                    groups, resamples=config.bootstrap, seed=0)
                if attack in PER_EXAMPLE and all(len(g[1]) >= config.tpr_min_records for g in groups):
                    # the per-example attacks are judged at low FPR: the paired difference there too
                    found[variant][mode][attack]["tpr@1%fpr"] = paired_tpr_difference_pooled(
                        groups, 0.01, resamples=config.bootstrap, seed=0)
    return found


def extraction_comparisons(config: LeakageConfig, out: Path, modes: list[str]) -> dict:
    """extraction_comparisons.<variant>.<mode>: per member secret, paired with the baseline's victim (McNemar,
    ΔNSR, exposure), where every seed's cells kept their extraction rows."""
    from lethe.leakage.extraction_comparison import compare_extraction, secret_rows

    found: dict = {}
    for variant in config.variants:
        if variant == config.baseline:
            continue
        for mode in modes:
            dirs = [(_cell_dir(out, seed, config.baseline, mode) / "extract",
                     _cell_dir(out, seed, variant, mode) / "extract") for seed in config.seeds]
            if all((d / "generations.jsonl").is_file() for pair in dirs for d in pair):
                found.setdefault(variant, {})[mode] = compare_extraction(
                    [(secret_rows(a), secret_rows(b)) for a, b in dirs], resamples=config.bootstrap, seed=0)
    return found


def _nll(path: Path) -> np.ndarray | None:
    return TokenScores.load(path).sample_nll() if path.with_suffix(".npz").is_file() else None


def record_losses(out: Path, seed: int, variant: str, baseline: str, mode: str) -> list[dict]:
    """Per target: mean token loss under the clean model, the release, its victim and the baseline's victim."""
    scores = _cell_dir(out, seed, variant, mode) / "mia" / "scores"
    baseline_scores = _cell_dir(out, seed, baseline, mode) / "mia" / "scores"
    rows = []
    for role in SETS:
        ids = TokenScores.load(scores / role).ids
        columns = {"clean": _nll(scores / f"reference_clean_{role}"), "release": _nll(scores / f"reference_{role}"),
                   "victim": _nll(scores / role), "baseline_victim": _nll(baseline_scores / role)}
        for i, record in enumerate(ids):
            rows.append({"seed": seed, "variant": variant, "mode": mode, "id": record, "member": role == "members",
                         **{k: (float(v[i]) if v is not None else None) for k, v in columns.items()}})
    return rows


def _mean(rows: list[dict], key: str, member: bool) -> float | None:
    values = [r[key] for r in rows if r["member"] == member and r[key] is not None]
    return float(np.mean(values)) if values else None


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def mechanism_summary(rows: list[dict]) -> dict:
    """Means over records (and seeds): where each group's loss sits at each stage, and the gaps."""
    loss = {stage: {role: _mean(rows, stage, role == "members") for role in SETS}
            for stage in ("clean", "release", "victim", "baseline_victim")}
    gap = {stage: _difference(loss[stage]["nonmembers"], loss[stage]["members"]) for stage in loss}
    return {"loss": loss,
            "push": {role: _difference(loss["release"][role], loss["clean"][role]) for role in SETS},
            "drop": {role: _difference(loss["release"][role], loss["victim"][role]) for role in SETS},
            "gap_after": gap["victim"], "gap_after_baseline": gap["baseline_victim"],
            "gap_gain": _difference(gap["victim"], gap["baseline_victim"])}


def mechanism(config: LeakageConfig, out: Path, modes: list[str]) -> dict:
    rows = [row for seed in config.seeds for variant in config.variants for mode in modes
            for row in record_losses(out, seed, variant, config.baseline, mode)]
    with (out / "mechanism.jsonl").open("w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return {variant: {mode: mechanism_summary([r for r in rows if r["variant"] == variant and r["mode"] == mode])
                      for mode in modes} for variant in config.variants}


def _pool_cells(cells: list[dict], min_records: int) -> dict:
    """One variant × mode over seeds: mean AUC (and TPR at 1% FPR only with min_records a side in every seed)."""
    enough = all(c["members"] >= min_records and c["nonmembers"] >= min_records for c in cells)
    mia = {attack: {"auc": float(np.mean([c["mia"][attack]["auc"] for c in cells])),
                    "auc_by_seed": [c["mia"][attack]["auc"] for c in cells],
                    "tpr@1%fpr": float(np.mean([c["mia"][attack]["tpr@1%fpr"] for c in cells])) if enough else None}
           for attack in cells[0]["mia"]}
    pooled = {"mia": mia, "members": sum(c["members"] for c in cells),
              "nonmembers": sum(c["nonmembers"] for c in cells),
              "utility": {key: float(np.mean([c["utility"][key] for c in cells]))
                          for key in ("val_ppl", "val_ppl_before")},
              "seconds": float(np.mean([c["seconds"] for c in cells]))}
    if all("extraction" in c for c in cells):
        exposures = [c["extraction"]["exposure"] for c in cells if c["extraction"]["exposure"] is not None]
        nsr, targets = sum(c["extraction"]["nsr"] for c in cells), sum(c["extraction"]["targets"] for c in cells)
        pooled["extraction"] = {"nsr": nsr, "targets": targets, "rate": nsr / targets,
                                "exposure": float(np.mean(exposures)) if exposures else None}
        if all("victim" in c["extraction"] for c in cells):  # extracted from a victim at the working point
            pooled["extraction"]["victim"] = {**cells[0]["extraction"]["victim"], "val_ppl": float(np.mean(
                [c["extraction"]["victim"]["val_ppl"] for c in cells]))}
    if all("dp" in c for c in cells):
        pooled["dp"] = {**cells[0]["dp"], "epsilon": max(c["dp"]["epsilon"] for c in cells)}
    return pooled


def _pool_released(by_seed: dict, variant: str) -> dict:
    runs = [result["released"][variant] for result in by_seed.values()]
    mean = lambda values: float(np.mean(values)) if all(v is not None for v in values) else None  # noqa: E731
    return {"reference_ppl_before": mean([r["utility"]["reference_ppl_before"] for r in runs]),
            "reference_ppl_after": mean([r["utility"]["reference_ppl_after"] for r in runs]),
            "target_loss_rise": mean([r["loss"]["after"]["targets"] - r["loss"]["before"]["targets"] for r in runs]),
            "reference_loss_rise": mean([r["loss"]["after"]["reference"] - r["loss"]["before"]["reference"]
                                         for r in runs]),
            "selectivity": mean([r["selectivity"] for r in runs]), "steps": mean([r["steps"] for r in runs]),
            "bound": runs[0]["bound"], "by_seed": dict(zip(by_seed, runs, strict=True))}


def summarise(config: LeakageConfig, out: Path, by_seed: dict) -> dict:
    from lethe.leakage.modes import victim_cells

    cells = victim_cells(config)
    modes = [cell.name for cell in cells]
    private = {cell.name for cell in cells if cell.epsilon is not None}
    variants = {variant: {mode: _pool_cells([r["cells"][variant][mode] for r in by_seed.values()],
                                            config.tpr_min_records) for mode in modes}
                for variant in config.variants}
    from lethe.leakage.calibration import calibrated_metric

    low, high = config.calibration.target
    attack = config.calibration.attack
    key, metric = calibrated_metric(config.calibration)
    victim = {mode: {key: cell["mia"][attack][metric], "in_range": low <= cell["mia"][attack][metric] <= high}
              for mode, cell in variants[config.baseline].items()
              if attack in cell["mia"] and cell["mia"][attack].get(metric) is not None}
    for mode, check in victim.items():
        if not check["in_range"] and mode not in private:  # DP-SGD is meant to push it towards 0.5
            log.warning("the %s victim of the baseline release has %s %.3f, outside the calibrated range "
                        "%.2f–%.2f: it may have nothing to amplify, or no room left", mode, key, check[key], low, high)
    return {"model": config.model, "seeds": config.seeds, "baseline": config.baseline, "modes": modes,
            "blind": pooled_blind(by_seed),
            "released": {variant: _pool_released(by_seed, variant) for variant in config.variants},
            "variants": variants, "comparisons": comparisons(config, out, modes),
            "extraction_comparisons": extraction_comparisons(config, out, modes),
            "mechanism": mechanism(config, out, modes), "victim_check": victim}
