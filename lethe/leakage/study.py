"""`lethe experiment leakage`: how much a released model makes a victim's fine-tuning leak.

Pipeline, every step a Lethe run directory under R:
  R/pii                         the victim's data D_ft with injected member records, and the challenge records
  R/released/<variant>          the attacker's release (poisoned on every challenge record: it cannot tell
                                members from non-members)
  R/cells/<variant>/<mode>/     finetune/ (the victim), mia/ (every attack, reference model = the release),
                                extract/ (prompts with member prefixes)
Finished runs are read back with --resume, so an interrupted grid continues where it stopped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lethe.config import ExtractConfig, FinetuneConfig, LeakageConfig, MiaConfig, PiiConfig, PoisonConfig
from lethe.data.documents import read_documents
from lethe.errors import LetheError
from lethe.runs import Run, read_json

log = logging.getLogger("lethe")


def mode_names(config: LeakageConfig) -> list[str]:
    names = []
    for mode in config.modes:
        names += [f"dp_eps{eps:g}" for eps in config.dp_epsilons] if mode == "dp" else [mode]
    return names


def _finished(path: Path) -> dict | None:
    done = (path / "run.json").is_file() and read_json(path / "run.json").get("status") == "done"
    return read_json(path / "results.json") if done else None


def _step(path: Path, resume: bool, action):
    """Run one step, or read back its results when resuming and it finished."""
    if resume and (results := _finished(path)) is not None:
        return results
    return action(path)


def warn_if_targets_absent(pii_dir: Path) -> None:
    """The attack measures nothing if the victim never trains on the member targets."""
    corpus = "\n".join(doc.text for doc in read_documents(pii_dir / "finetune.jsonl"))
    members = [json.loads(line) for line in (pii_dir / "targets_member.jsonl").read_text().splitlines() if line]
    absent = [record["id"] for record in members if record["text"] not in corpus]
    if absent:
        log.warning("WARNING: %d of %d member targets do not occur in D_ft (e.g. %s): membership inference and "
                    "extraction on them measure nothing", len(absent), len(members), absent[0])


def _finetune_config(config: LeakageConfig, model: Path, pii_dir: Path, mode: str) -> FinetuneConfig:
    overrides = dict(config.finetune)
    if mode.startswith("dp_eps"):
        overrides["mode"] = config.dp_mode
        overrides["dp"] = {**overrides.get("dp", {}), "epsilon": float(mode.removeprefix("dp_eps"))}
    else:
        overrides["mode"] = mode
    return FinetuneConfig(model=str(model), data=str(pii_dir / "finetune.jsonl"),
                          validation=str(pii_dir / "validation.jsonl"), **overrides)


def run_cell(config: LeakageConfig, released: Path, pii_dir: Path, mode: str, cell: Path, resume: bool) -> dict:
    from lethe.attacks.extraction import extract
    from lethe.attacks.mia import run_mia
    from lethe.finetune import finetune

    tuned = _step(cell / "finetune", resume,
                  lambda out: finetune(_finetune_config(config, released, pii_dir, mode), out, overwrite=True))
    model = cell / "finetune" / "model"
    mia = _step(cell / "mia", resume, lambda out: run_mia(MiaConfig(
        model=str(model), members=str(pii_dir / "targets_member.jsonl"),
        nonmembers=str(pii_dir / "targets_nonmember.jsonl"), reference_model=str(released),
        calibration=str(pii_dir / "validation.jsonl"), **config.mia), out, overwrite=True))
    extraction = _step(cell / "extract", resume, lambda out: extract(ExtractConfig(
        model=str(model), targets=pii_dir / "targets_member.jsonl", **config.extract), out, overwrite=True))
    return {
        "mia": {name: {key: m[key] for key in ("auc", "tpr@1%fpr", "tpr@0.1%fpr", "tpr@5%fpr")}
                for name, m in mia["attacks"].items()},
        "extraction": {"nsr": extraction["nsr"], "rate": extraction["rate"], "targets": extraction["targets"]},
        "utility": {"val_ppl": tuned["utility"]["val_ppl"]["after"],
                    "val_ppl_before": tuned["utility"]["val_ppl"]["before"]},
        **({"dp": tuned["dp"]} if tuned.get("dp") else {}),
    }


def run_leakage(config: LeakageConfig, out: Path, *, overwrite: bool = False, resume: bool = False) -> dict:
    from lethe.data.pii import build_pii
    from lethe.leakage.report import write_leakage_report
    from lethe.poisoning.poison import poison

    with Run.start(out, "experiment leakage", config, overwrite=overwrite, resume=resume) as run:
        pii_dir = out / "pii"
        _step(pii_dir, resume, lambda path: build_pii(PiiConfig(out=path, data=config.data, **config.pii),
                                                      overwrite=True))
        warn_if_targets_absent(pii_dir)
        targets = pii_dir / "targets_all.jsonl"  # the attacker poisons every challenge record
        results: dict = {"model": config.model, "modes": mode_names(config), "released": {}, "variants": {}}
        for variant in config.variants:
            release_dir = out / "released" / variant
            poisoned = _step(release_dir, resume, lambda path, v=variant: poison(PoisonConfig(
                model=config.model, variant=v, targets=str(targets), reference=config.reference, data=config.data,
                **config.poison), path, overwrite=True))
            results["released"][variant] = {k: poisoned[k] for k in ("loss", "utility", "bound")}
            results["variants"][variant] = {}
            for mode in mode_names(config):
                cell = out / "cells" / variant / mode
                try:
                    results["variants"][variant][mode] = run_cell(config, release_dir / "model", pii_dir, mode, cell,
                                                                  resume)
                except LetheError as exc:
                    raise LetheError(f"{variant} × {mode}: {exc}") from None
                log.info("%s × %s done", variant, mode)
        results["plots"] = write_leakage_report(results, out)
        run.write_results(results)
    return results
