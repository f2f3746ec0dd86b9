"""`lethe experiment leakage`: how much a released model makes a victim's fine-tuning leak.

Pipeline per seed s, every step a Lethe run directory under R/seed-<s>:
  pii/                          the targets (members and non-members from one generator) and D_ft
  released/<variant>/           the attacker's release (poisoned on every target: it cannot tell
                                members from non-members)
  cells/<variant>/<mode>/       finetune/ (the victim), mia/ (every attack; reference models: the release and
                                the clean model), extract/ (prompts with member prefixes)
Then, from the saved scores alone: the blind baseline of each seed's targets, every variant's paired
comparison with the baseline release, and the per-record mechanism (lethe.leakage.analysis).
Finished runs are read back with --resume, so an interrupted grid continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from lethe.config import ExtractConfig, FinetuneConfig, LeakageConfig, MiaConfig, PiiConfig, deep_merge
from lethe.data.documents import read_documents
from lethe.errors import LetheError
from lethe.leakage.modes import VictimCell, cells_of, victim_cells
from lethe.runs import Run, read_json, write_json

log = logging.getLogger("lethe")


def run_seconds(path: Path) -> float:
    """Wall time of a finished run, from its run.json (so a resumed study still knows what each step cost)."""
    from datetime import datetime

    info = read_json(path / "run.json")
    started, finished = (datetime.strptime(info[key], "%Y-%m-%dT%H:%M:%S%z") for key in ("started", "finished"))
    return (finished - started).total_seconds()


def _finished(path: Path) -> dict | None:
    done = (path / "run.json").is_file() and read_json(path / "run.json").get("status") == "done"
    return read_json(path / "results.json") if done else None


def step(path: Path, resume: bool, action):
    """Run one step, or read back its results when resuming and it finished."""
    if resume and (results := _finished(path)) is not None:
        return results
    return action(path)


def read_targets_file(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def check_targets(pii_dir: Path, tokenizer, chunk_lengths: dict[str, int]) -> None:
    """Every attack scores a whole target, and the victim trains on exactly that unit: refuse a target the
    fine-tuning or scoring chunks would cut, and members the victim never sees."""
    targets = read_targets_file(pii_dir / "targets_all.jsonl")
    lengths = [len(ids) for ids in tokenizer([t["text"] for t in targets], add_special_tokens=False)["input_ids"]]
    for role, limit in chunk_lengths.items():
        longest = max(range(len(targets)), key=lengths.__getitem__)
        if lengths[longest] > limit:
            raise LetheError(f"target {targets[longest]['id']} is {lengths[longest]} tokens, longer than the {role} "
                             f"chunk length {limit}: it would be split across chunks; raise {role}.chunk.length or "
                             "shorten the targets")
    trained = {doc.text for doc in read_documents(pii_dir / "finetune.jsonl")}
    absent = [t["id"] for t in read_targets_file(pii_dir / "targets_member.jsonl") if t["text"] not in trained]
    if absent:
        raise LetheError(f"{len(absent)} member targets are not fine-tuning documents of their own (e.g. {absent[0]}); "
                         "membership inference on them would measure nothing")


class Study:
    """One seed's share of the grid: the paths and configs of its steps."""

    def __init__(self, config: LeakageConfig, root: Path, seed: int, resume: bool) -> None:
        self.config, self.seed, self.resume = config, seed, resume
        self.root = root / f"seed-{seed}"
        self.pii = self.root / "pii"

    def build_targets(self) -> dict:
        from lethe.data.pii import build_pii

        config = PiiConfig(out=self.pii, data=self.config.data, **{**self.config.pii, "seed": self.seed})
        return step(self.pii, self.resume, lambda path: build_pii(config, overwrite=True))

    def release(self, variant: str) -> dict:
        from lethe.poisoning.poison import poison

        # the attacker poisons every target: it cannot tell members from non-members
        config = self.config.poison_config(variant, model=self.config.model, seed=self.seed,
                                           targets=str(self.pii / "targets_all.jsonl"))
        path = self.root / "released" / variant
        return step(path, self.resume, lambda out: poison(config, out, overwrite=True))

    def finetune_config(self, variant: str, victim: VictimCell, overrides: dict | None = None) -> FinetuneConfig:
        settings = deep_merge(self.config.finetune, overrides or {})
        settings = deep_merge({"score_data": False}, deep_merge(settings, {"train": {"seed": self.seed}}))
        return FinetuneConfig(model=str(self.root / "released" / variant / "model"),
                              data=str(self.pii / "finetune.jsonl"), validation=str(self.pii / "validation.jsonl"),
                              **victim.finetune_settings(settings))

    def mia_config(self, victim: Path, release: Path, **overrides) -> MiaConfig:
        references = {"clean": self.config.model} if self.config.reference_clean else {}
        settings = deep_merge({"blind": None}, deep_merge(self.config.mia, overrides))  # the study's own, per seed
        return MiaConfig(model=str(victim), members=str(self.pii / "targets_member.jsonl"),
                         nonmembers=str(self.pii / "targets_nonmember.jsonl"), reference_model=str(release),
                         reference_models=references, calibration=str(self.pii / "calibration.jsonl"),
                         **{"seed": self.seed, **settings})

    def cell(self, variant: str, victim: VictimCell, cell: Path, finetune_overrides: dict | None = None,
             mia_overrides: dict | None = None, extraction: bool = True) -> dict:
        from lethe.attacks.extraction import extract
        from lethe.attacks.mia_suite import run_mia
        from lethe.training.finetune import finetune

        release = self.root / "released" / variant / "model"
        config = self.finetune_config(variant, victim, finetune_overrides)
        tuned = step(cell / "finetune", self.resume, lambda out: finetune(config, out, overwrite=True))
        victim = cell / "finetune" / "model"
        mia = step(cell / "mia", self.resume, lambda out: run_mia(
            self.mia_config(victim, release, **(mia_overrides or {})), out, overwrite=True))
        result = {
            "mia": {name: {key: m[key] for key in ("auc", "tpr@1%fpr", "tpr@0.1%fpr", "tpr@5%fpr")}
                    for name, m in mia["attacks"].items()},
            "utility": {"val_ppl": tuned["utility"]["val_ppl"]["after"],
                        "val_ppl_before": tuned["utility"]["val_ppl"]["before"]},
            "members": mia["members"], "nonmembers": mia["nonmembers"],
            **({"dp": tuned["dp"]} if tuned.get("dp") else {}),
        }
        if extraction:
            extract_config = ExtractConfig(model=str(victim), targets=self.pii / "targets_member.jsonl",
                                           **deep_merge(self.config.extract, {"decoding": {"seed": self.seed}}))
            found = step(cell / "extract", self.resume, lambda out: extract(extract_config, out, overwrite=True))
            result["extraction"] = {"nsr": found["nsr"], "rate": found["rate"], "targets": found["targets"],
                                    "exposure": found["exposure"].get("mean")}
        steps = ["finetune", "mia"] + (["extract"] if extraction else [])
        result["seconds"] = round(sum(run_seconds(cell / name) for name in steps), 1)  # read back, too
        return result


def tokenizer_of(model: str):
    from transformers import AutoTokenizer

    from lethe.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(model))


def run_seed(config: LeakageConfig, out: Path, seed: int, resume: bool) -> dict:
    from lethe.leakage.analysis import blind_of_seed

    study = Study(config, out, seed, resume)
    study.build_targets()
    [full] = cells_of(config, "full")
    check_targets(study.pii, tokenizer_of(config.model),
                  {"finetune": study.finetune_config(config.baseline, full).chunk.length,
                   "mia": study.mia_config(study.root, study.root).chunk.length})
    blind = blind_of_seed(study.pii, config.blind, seed, study.root / "blind.json", resume)
    released, cells, screens = {}, {}, {}
    for variant in config.variants:
        poisoned = study.release(variant)
        if config.screen is not None:  # the victim screens the release before fine-tuning on it
            from lethe.screening.study import screen_release

            screens[variant] = screen_release(study, variant)
        released[variant] = {key: poisoned.get(key) for key in ("loss", "utility", "bound", "selectivity")}
        released[variant]["steps"] = (poisoned.get("train") or {}).get("steps", 0)
        cells[variant] = {}
        for victim in victim_cells(config):
            mode = victim.name
            try:
                cells[variant][mode] = study.cell(variant, victim, study.root / "cells" / variant / mode)
            except LetheError as exc:
                raise LetheError(f"seed {seed}, {variant} × {mode}: {exc}") from None
            log.info("seed %d: %s × %s done in %.0f s", seed, variant, mode, cells[variant][mode]["seconds"])
    return {"blind": blind, "released": released, "cells": cells, "screen": screens}


def run_leakage(config: LeakageConfig, out: Path, *, overwrite: bool = False, resume: bool = False) -> dict:
    from lethe.leakage.analysis import summarise
    from lethe.leakage.report import write_leakage_report

    with Run.start(out, "experiment leakage", config, overwrite=overwrite, resume=resume) as run:
        started = time.time()
        by_seed = {seed: run_seed(config, out, seed, resume) for seed in config.seeds}
        results = summarise(config, out, by_seed)
        if config.screen is not None:
            results["screen"] = {variant: {seed: by_seed[seed]["screen"][variant] for seed in config.seeds}
                                 for variant in config.variants}
        results["seconds"] = round(time.time() - started, 1)
        write_json(out / "by_seed.json", by_seed)
        results["plots"] = write_leakage_report(results, out)
        run.write_results(results)
    return results
