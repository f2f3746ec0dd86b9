"""`lethe experiment leakage`: how much a released model makes a victim's fine-tuning leak.

Pipeline per seed s, every step a Lethe run directory under R/seed-<s>:
  pii/                          the targets (members and non-members from one generator) and D_ft
  released/<variant>/           the attacker's release (poisoned on every target: it cannot tell
                                members from non-members)
  references/                   with `references: K`, each reference victim's D_ft and the keep matrix
                                (lethe.leakage.references)
  cells/<variant>/<mode>/       finetune/ (the victim), references/ref-<k>/ (its reference victims), mia/
                                (every attack; reference models: the release and the clean model; LiRA and
                                RMIA against the reference victims), extract/ (prompts with member prefixes),
                                with `extraction_victim`: extraction-victim/ (fine-tuned on pii-copies<c>/)
Then, from the saved scores alone: the blind baseline of each seed's targets, every variant's paired
comparison with the baseline release, and the per-record mechanism (lethe.leakage.analysis).
The runs go in three stages (releases; fine-tunes; attacks), each's runs `jobs` at a time.
Finished runs are read back with --resume, so an interrupted grid continues where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lethe.config import ExtractConfig, FinetuneConfig, LeakageConfig, MiaConfig, PiiConfig, deep_merge
from lethe.data.documents import read_documents
from lethe.errors import LetheError
from lethe.leakage.modes import VictimCell, cells_of, victim_cells
from lethe.runs import Run, finished, read_json, write_json


def run_seconds(path: Path) -> float:
    """Wall time of a finished run, from its run.json (so a resumed study still knows what each step cost)."""
    from datetime import datetime

    info = read_json(path / "run.json")
    started, ended = (datetime.strptime(info[key], "%Y-%m-%dT%H:%M:%S%z") for key in ("started", "finished"))
    return (ended - started).total_seconds()


def step(path: Path, resume: bool, action):
    """Run one step, or read back its results when resuming and it finished."""
    if resume and finished(path):
        return read_json(path / "results.json")
    return action(path)


def read_targets_file(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line]


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
        built = step(self.pii, self.resume, lambda path: build_pii(config, overwrite=True))
        if (victim := self.config.extraction_victim) is not None:  # the same draw, members copied more often
            more = config.model_copy(update={"out": self.extraction_pii, "repetitions": victim.copies})
            step(self.extraction_pii, self.resume, lambda path: build_pii(more, overwrite=True))
            same_secrets(self.pii, self.extraction_pii)
        return built

    @property
    def extraction_pii(self) -> Path:
        return self.root / f"pii-copies{self.config.extraction_victim.copies}"

    def release(self, variant: str) -> dict:
        from lethe.poisoning.poison import poison

        # the attacker poisons every target: it cannot tell members from non-members
        config = self.config.poison_config(variant, model=self.config.model, seed=self.seed,
                                           targets=str(self.pii / "targets_all.jsonl"))
        path = self.root / "released" / variant
        return step(path, self.resume, lambda out: poison(config, out, overwrite=True))

    def finetune_config(self, variant: str, victim: VictimCell, overrides: dict | None = None, *,
                        reference: int | None = None, data: Path | None = None) -> FinetuneConfig:
        """The victim's fine-tuning; with `reference` k, the same recipe on reference k's D_ft and seed; with `data`,
        on that D_ft (the extraction victim's)."""
        from lethe.leakage.references import reference_data, reference_seed

        seed = self.seed if reference is None else reference_seed(self.seed, reference)
        settings = deep_merge(self.config.finetune, overrides or {})
        settings = deep_merge({"score_data": False}, deep_merge(settings, {"train": {"seed": seed}}))
        if data is None:
            data = self.pii / "finetune.jsonl" if reference is None else reference_data(self.references, reference)
        return FinetuneConfig(model=str(self.root / "released" / variant / "model"), data=str(data),
                              validation=str(self.pii / "validation.jsonl"), **victim.finetune_settings(settings))

    def mia_config(self, victim: Path, release: Path, reference_victims: Path | None = None, **overrides) -> MiaConfig:
        references = {"clean": self.config.model} if self.config.reference_clean else {}
        settings = deep_merge({"blind": None}, deep_merge(self.config.mia, overrides))  # the study's own, per seed
        return MiaConfig(model=str(victim), members=str(self.pii / "targets_member.jsonl"),
                         nonmembers=str(self.pii / "targets_nonmember.jsonl"), reference_model=str(release),
                         reference_models=references, calibration=str(self.pii / "calibration.jsonl"),
                         reference_victims=str(reference_victims) if reference_victims else None,
                         **{"seed": self.seed, **settings})

    @property
    def references(self) -> Path:
        return self.root / "references"

    def build_reference_data(self) -> None:
        from lethe.leakage.references import build_reference_data

        if self.config.references:
            build_reference_data(self.pii, self.references, self.config.references, self.seed)

    def reference_victim(self, variant: str, victim: VictimCell, cell: Path, k: int,
                         finetune_overrides: dict | None = None) -> dict:
        """Reference victim k of a cell: the cell's own recipe on reference k's half of the candidates."""
        from lethe.training.finetune import finetune

        config = self.finetune_config(variant, victim, finetune_overrides, reference=k)
        return step(cell / "references" / f"ref-{k}", self.resume, lambda out: finetune(config, out, overwrite=True))

    def reference_victims(self, variant: str, victim: VictimCell, cell: Path,
                          finetune_overrides: dict | None = None) -> Path | None:
        """Every reference victim of a cell (read back when finished) and the manifest that lists them."""
        from lethe.leakage.references import write_reference_manifest

        if not self.config.references:
            return None
        for k in range(self.config.references):
            self.reference_victim(variant, victim, cell, k, finetune_overrides)
        return write_reference_manifest(self.references, cell / "references", self.config.references)

    def cell_dir(self, variant: str, victim: VictimCell) -> Path:
        return self.root / "cells" / variant / victim.name

    def victim_finetune(self, variant: str, victim: VictimCell, cell: Path,
                        finetune_overrides: dict | None = None) -> dict:
        from lethe.training.finetune import finetune

        config = self.finetune_config(variant, victim, finetune_overrides)
        return step(cell / "finetune", self.resume, lambda out: finetune(config, out, overwrite=True))

    def extraction_finetune(self, variant: str, victim: VictimCell, cell: Path) -> dict:
        """The cell's extraction victim: its recipe on the working point's D_ft, for the working point's epochs."""
        from lethe.training.finetune import finetune

        working_point = self.config.extraction_victim
        train = {"epochs": working_point.epochs, **({"lr": working_point.lr} if working_point.lr else {})}
        config = self.finetune_config(variant, victim, {"train": train}, data=self.extraction_pii / "finetune.jsonl")
        return step(cell / "extraction-victim", self.resume, lambda out: finetune(config, out, overwrite=True))

    def cell(self, variant: str, victim: VictimCell, cell: Path, finetune_overrides: dict | None = None,
             mia_overrides: dict | None = None, extraction: bool = True, references: bool = True) -> dict:
        from lethe.attacks.extraction import extract
        from lethe.attacks.mia_suite import run_mia

        release = self.root / "released" / variant / "model"
        tuned = self.victim_finetune(variant, victim, cell, finetune_overrides)
        manifest = self.reference_victims(variant, victim, cell, finetune_overrides) if references else None
        tuned_model = cell / "finetune" / "model"
        mia = step(cell / "mia", self.resume, lambda out: run_mia(
            self.mia_config(tuned_model, release, manifest, **(mia_overrides or {})), out, overwrite=True))
        result = {
            "mia": {name: {key: m[key] for key in ("auc", "tpr@1%fpr", "tpr@0.1%fpr", "tpr@5%fpr")}
                    for name, m in mia["attacks"].items()},
            "utility": {"val_ppl": tuned["utility"]["val_ppl"]["after"],
                        "val_ppl_before": tuned["utility"]["val_ppl"]["before"]},
            "members": mia["members"], "nonmembers": mia["nonmembers"],
            **({"dp": tuned["dp"]} if tuned.get("dp") else {}),
        }
        steps = ["finetune", "mia"]
        if extraction:
            extracted_from, working_point = tuned_model, None
            if self.config.extraction_victim is not None:  # a victim of its own, at the extraction's working point
                working_point = self.extraction_finetune(variant, victim, cell)
                extracted_from = cell / "extraction-victim" / "model"
                steps.append("extraction-victim")
            extract_config = ExtractConfig(model=str(extracted_from), targets=self.pii / "targets_member.jsonl",
                                           **deep_merge(self.config.extract, {"decoding": {"seed": self.seed}}))
            found = step(cell / "extract", self.resume, lambda out: extract(extract_config, out, overwrite=True))
            result["extraction"] = {"nsr": found["nsr"], "rate": found["rate"], "targets": found["targets"],
                                    "exposure": found["exposure"].get("mean")}
            if working_point is not None:
                result["extraction"]["victim"] = {**self.config.extraction_victim.model_dump(),
                                                  "val_ppl": working_point["utility"]["val_ppl"]["after"]}
            steps.append("extract")
        steps += [f"references/ref-{k}" for k in range(self.config.references if manifest else 0)]
        result["seconds"] = round(sum(run_seconds(cell / name) for name in steps), 1)  # read back, too
        return result


def same_secrets(pii: Path, other: Path) -> None:
    """Two PII builds of one seed that differ in copies only must hold the same targets, or their victims'
    extractions would not measure the same secrets."""
    for role in ("member", "nonmember"):
        drawn = [[(t["id"], t["text"]) for t in read_targets_file(path / f"targets_{role}.jsonl")]
                 for path in (pii, other)]
        if drawn[0] != drawn[1]:
            raise LetheError(f"the {role} targets of {other} differ from those of {pii}: the victims would not "
                             "be prompted with the same secrets")


def tokenizer_of(config: LeakageConfig):
    """The clean model's tokenizer, through the remote-code check every model goes through."""
    from lethe.models import load_tokenizer, resolve_model_path

    return load_tokenizer(resolve_model_path(config.model),
                          trust_remote_code=bool(config.finetune.get("trust_remote_code", False)))


def prepare_seed(config: LeakageConfig, out: Path, seed: int, resume: bool) -> tuple[Study, dict]:
    """A seed's targets, the references' data and the blind baseline: cheap, and needed by every run after."""
    from lethe.leakage.analysis import blind_of_seed

    study = Study(config, out, seed, resume)
    study.build_targets()
    study.build_reference_data()
    [full] = cells_of(config, "full")
    check_targets(study.pii, tokenizer_of(config),
                  {"finetune": study.finetune_config(config.baseline, full).chunk.length,
                   "mia": study.mia_config(study.root, study.root).chunk.length})
    return study, blind_of_seed(study.pii, config.blind, seed, study.root / "blind.json", resume)


def attacked_cell(study: Study, variant: str, victim: VictimCell) -> dict:
    try:
        result = study.cell(variant, victim, study.cell_dir(variant, victim))
    except LetheError as exc:
        raise LetheError(f"seed {study.seed}, {variant} × {victim.name}: {exc}") from None
    return result


def run_grid(config: LeakageConfig, out: Path, resume: bool) -> dict:
    """Every seed's releases, then every fine-tune (victims and reference victims), then every cell's attacks:
    each stage's runs are independent, `config.jobs` at a time (lethe.parallel)."""
    from lethe.parallel import run_tasks

    prepared = {seed: prepare_seed(config, out, seed, resume) for seed in config.seeds}
    studies = {seed: study for seed, (study, _) in prepared.items()}
    grid = [(seed, variant) for seed in config.seeds for variant in config.variants]
    releases = dict(zip(grid, run_tasks({f"seed {seed}, {variant}": (studies[seed].release, (variant,))
                                         for seed, variant in grid}, config.jobs, "releases"), strict=True))
    screens = {}
    if config.screen is not None:  # the victim screens each release before fine-tuning on it
        from lethe.screening.study import screen_release

        screens = dict(zip(grid, run_tasks({f"seed {seed}, {variant}": (screen_release, (studies[seed], variant))
                                            for seed, variant in grid}, config.jobs, "screening"), strict=True))
    cells = [(seed, variant, victim) for seed, variant in grid for victim in victim_cells(config)]
    named = {f"seed {seed}, {variant} × {victim.name}": (studies[seed], variant, victim, studies[seed].cell_dir(
        variant, victim)) for seed, variant, victim in cells}
    tunes = {f"{name}, victim": (study.victim_finetune, (variant, victim, where))
             for name, (study, variant, victim, where) in named.items()}
    tunes |= {f"{name}, reference {k}": (study.reference_victim, (variant, victim, where, k))
              for name, (study, variant, victim, where) in named.items() for k in range(config.references)}
    if config.extraction_victim is not None:
        tunes |= {f"{name}, extraction victim": (study.extraction_finetune, (variant, victim, where))
                  for name, (study, variant, victim, where) in named.items()}
    run_tasks(tunes, config.jobs, "fine-tunes")
    # the study's directory held nothing when this run started (or holds what it resumes): every finished
    # fine-tune in it was made for this grid, so the cells read them back
    reading = {seed: Study(config, out, seed, resume=True) for seed in config.seeds}
    attacked = run_tasks({name: (attacked_cell, (reading[study.seed], variant, victim))
                          for name, (study, variant, victim, _) in named.items()}, config.jobs, "attacks")
    by_seed = {seed: {"blind": blind, "released": {}, "cells": {variant: {} for variant in config.variants},
                      "screen": {}} for seed, (_, blind) in prepared.items()}
    for (seed, variant), screened in screens.items():
        by_seed[seed]["screen"][variant] = screened
    for (seed, variant), poisoned in releases.items():
        released = {key: poisoned.get(key) for key in ("loss", "utility", "bound", "selectivity")}
        by_seed[seed]["released"][variant] = {**released, "steps": (poisoned.get("train") or {}).get("steps", 0)}
    for (seed, variant, victim), result in zip(cells, attacked, strict=True):
        by_seed[seed]["cells"][variant][victim.name] = result
    return by_seed


def run_leakage(config: LeakageConfig, out: Path, *, overwrite: bool = False, resume: bool = False) -> dict:
    from lethe.leakage.analysis import summarise
    from lethe.leakage.report import write_leakage_report

    with Run.start(out, "experiment leakage", config, overwrite=overwrite, resume=resume) as run:
        started = time.time()
        by_seed = run_grid(config, out, resume)
        results = summarise(config, out, by_seed)
        if config.screen is not None:
            results["screen"] = {variant: {seed: by_seed[seed]["screen"][variant] for seed in config.seeds}
                                 for variant in config.variants}
        results["seconds"] = round(time.time() - started, 1)
        write_json(out / "by_seed.json", by_seed)
        results["plots"] = write_leakage_report(results, out)
        run.write_results(results)
    return results
