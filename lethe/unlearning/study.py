"""`lethe experiment unlearning` and `lethe sweep`: many unlearning runs, resumable, aggregated.

Each run is a cell directory; a cell whose run finished is read back, never redone, so an
interrupted study continues where it stopped. The original model is scored once per domain and
those scores are shared by every cell.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from scipy.stats import spearmanr

from lethe.config import UnlearnConfig, UnlearningStudyConfig, describe_validation_error
from lethe.data.roles import RunData, role_splits
from lethe.data.splits import find_splits
from lethe.engine.schedule import refuse_no_updates
from lethe.errors import LetheError, TrainingDiverged
from lethe.models import load_model, model_context, resolve_model_path
from lethe.runs import Run, finished, read_json, write_json
from lethe.training.pretrain import retrain
from lethe.training.target import target_run
from lethe.unlearning.attacks import ModelAttacks, attack_model, attack_results, load_attacks
from lethe.unlearning.evaluation import (
    load_role_scores,
    retrain_distance,
    score_roles,
    split_blind,
    unlearning_metrics,
)
from lethe.unlearning.methods import methods
from lethe.unlearning.requests import answer_requests
from lethe.unlearning.run import unlearn
from lethe.unlearning.shadows import known_origin
from lethe.unlearning.u_mia import study_u_mia

log = logging.getLogger("lethe")


def study_methods(config: UnlearningStudyConfig) -> list[str]:
    chosen = config.methods or methods.names()
    for name in chosen:
        methods.get(name)  # unknown names fail before any work starts
    return chosen


def original_model(config: UnlearningStudyConfig):
    return load_model(config.model, dtype=config.unlearn.dtype, trust_remote_code=config.unlearn.trust_remote_code,
                      allow_cpu_bf16=config.unlearn.allow_cpu_bf16)


def domain_data(config: UnlearningStudyConfig, domain: str, model, tokenizer) -> RunData:
    """A domain's roles, chunked as every unlearning run of the study chunks them."""
    return RunData.load(config.data, domain, tokenizer, config.unlearn.chunk, model_context(model))


def original_scores(config: UnlearningStudyConfig, domain: str, out: Path) -> dict:
    """Score the original model on one domain's roles once; reuse the saved scores afterwards."""
    scores_dir = out / "original" / domain
    if not (scores_dir / "done").is_file():
        model, tokenizer = original_model(config)
        score_roles(model, tokenizer, domain_data(config, domain, model, tokenizer), config.unlearn.eval.batch_tokens,
                    scores_dir)
        (scores_dir / "done").write_text("")
    return load_role_scores(scores_dir, domain)


def domain_blind(config: UnlearningStudyConfig, domain: str, out: Path) -> dict | None:
    """The blind baseline of the domain's Min-K% samples, once (it depends on the data, not on any model)."""
    path = out / "original" / domain / "blind.json"
    if config.unlearn.eval.blind is None:
        return None
    if not path.is_file():
        model, tokenizer = original_model(config)
        data = domain_data(config, domain, model, tokenizer)
        write_json(path, split_blind(data.role_chunks("forget"), data.role_chunks("approximate"), tokenizer,
                                     config.unlearn.eval))
    return read_json(path)


def retrain_paths(config: UnlearningStudyConfig, domain: str, out: Path) -> tuple[Path, Path]:
    """The model retrained without the domain's forget set, and where its scores go."""
    known = target_run(config.model)
    target = known / "retrain" if known else out / "retrain" / domain
    return target, (out / "retrain" / domain if known else target) / "unlearning_scores"


def retrained_scores(config: UnlearningStudyConfig, domain: str, out: Path) -> dict:
    """Pretrain again without the domain's forget set (once), then score it like every other model."""
    target, scores_dir = retrain_paths(config, domain, out)
    if target_run(config.model) is None and not finished(target):
        original_run = resolve_model_path(config.model).parent
        retrain(original_run, [role_splits(domain)["forget"]], target, overwrite=target.exists())
    if not (scores_dir / "done").is_file():
        model, tokenizer = load_model(target)
        score_roles(model, tokenizer, domain_data(config, domain, model, tokenizer), config.unlearn.eval.batch_tokens,
                    scores_dir)
        (scores_dir / "done").write_text("")
    return load_role_scores(scores_dir, domain)


def attacked(config: UnlearningStudyConfig, domain: str, load: Callable, out: Path, scores: dict) -> ModelAttacks:
    """The configured attacks on one model (`load()` gives it and its tokenizer), once: saved under `out`."""
    if (out / "attacks.json").is_file():
        return load_attacks(out, domain)
    model, tokenizer = load()
    return attack_model(model, tokenizer, domain_data(config, domain, model, tokenizer), scores, config,
                        config.unlearn.eval, out)


def model_scores(config: UnlearningStudyConfig, domain: str, out: Path, who: str) -> dict:
    """One model's role scores (original, retrained or a method's), from where the study saved them."""
    if who == "original":
        return original_scores(config, domain, out)
    if who == "retrained":
        return retrained_scores(config, domain, out)
    return load_role_scores(out / "runs" / domain / who / "scores" / "unlearned", domain)


def attack_subject(config: UnlearningStudyConfig, domain: str, out: Path, who: str) -> tuple[Callable, Path]:
    """How to load one model of a domain (original, retrained or a method's), and where its attacks are saved."""
    if who == "original":
        return lambda: original_model(config), out / "original" / domain / "attacks"
    if who == "retrained":
        target, scores_dir = retrain_paths(config, domain, out)
        return lambda: load_model(target), scores_dir / "attacks"
    cell_dir = out / "runs" / domain / who
    return lambda: load_model(cell_dir / "model"), cell_dir / "scores" / "unlearned" / "attacks"


def domain_attacks(config: UnlearningStudyConfig, domain: str, out: Path, names: list[str],
                   scores: dict[str, dict]) -> dict[str, dict]:
    """Quantization, relearning and verbatim memorisation of every model of a domain (original, retrain, each
    method that did not diverge), compared with one another: the rows' `quantized`, `relearn` and `verbmem`."""
    models = ["original", *(["retrained"] if "retrained" in scores else []), *(n for n in names if n in scores)]
    found = {who: attacked(config, domain, *attack_subject(config, domain, out, who), scores=scores[who])
             for who in models}
    return attack_results(scores, found, config, config.unlearn.eval)


def cell_config(config: UnlearningStudyConfig, domain: str, method: str,
                train_overrides: dict[str, Any] | None = None, changes: dict[str, Any] | None = None) -> UnlearnConfig:
    """One run's settings: the study's (with the method's `method_overrides`), with `train_overrides` (a sweep's grid
    point) and `changes` (a deletion request's model and documents)."""
    settings = config.settings_of(method)
    settings["train"] |= train_overrides or {}
    try:
        return UnlearnConfig.model_validate({**settings, "model": config.model, "data": config.data, "domain": domain,
                                             "method": method, **(changes or {})})
    except ValidationError as exc:
        raise LetheError(f"{method} on {domain}: {describe_validation_error(exc)}") from None


def sweep_overrides(lr: float, steps: int) -> dict[str, Any]:
    return {"lr": lr, "max_steps": steps, "epochs": 1e6}


def run_cell(config: UnlearningStudyConfig, domain: str, method: str, out: Path, originals: dict | None,
             train_overrides: dict[str, Any] | None = None, changes: dict[str, Any] | None = None) -> dict:
    """One unlearning run, or its saved results; divergence is recorded as a result, not a crash."""
    if finished(out):
        return read_json(out / "results.json")
    cell = cell_config(config, domain, method, train_overrides, changes)
    try:
        return unlearn(cell, out, overwrite=out.exists(), original_scores=originals)
    except TrainingDiverged as exc:
        log.warning("%s on %s diverged: %s", method, domain, exc)
        return {"method": method, "domain": domain, "diverged": str(exc)}


def _mean_tree(trees: list[dict]) -> dict:
    """Average numeric leaves across domains (None where any domain lacks the leaf). One domain's tree is kept whole:
    its intervals, counts and per-method details are the study's, with nothing to average."""
    if len(trees) == 1:
        return copy.deepcopy(trees[0])
    merged: dict = {}
    for key, value in trees[0].items():
        values = [tree.get(key) for tree in trees]
        if isinstance(value, dict) and all(isinstance(v, dict) for v in values):
            merged[key] = _mean_tree(values)
        elif all(isinstance(v, bool) for v in values):  # a flag (collapsed): set when any domain sets it
            merged[key] = any(values)
        elif all(isinstance(v, int | float) and v is not None for v in values):
            merged[key] = float(np.mean(values))
    return merged


def cell_summary(results: dict, retrained: dict | None, config: UnlearningStudyConfig, cell_dir: Path) -> dict:
    if "diverged" in results:
        return {"diverged": results["diverged"]}
    summary = {**results["after"], "cost": results["cost"]}
    if retrained is not None:
        unlearned = load_role_scores(cell_dir / "scores" / "unlearned", results["domain"])
        summary["retrain_distance"] = retrain_distance(unlearned, retrained, config.unlearn.eval)
    return summary


def yardstick_agreement(by_method: dict[str, dict]) -> dict[str, float | None]:
    """Do the approximate yardstick and exact retraining rank methods alike? (Spearman over methods)"""
    rows = [(abs(m["approx_gap"]["log_ppl_ratio"]), abs(math.log(m["retrain_distance"]["forget_ppl_ratio"])))
            for m in by_method.values() if "retrain_distance" in m]
    if len(rows) < 3:
        return {"spearman": None, "methods": len(rows)}
    gap, distance = zip(*rows, strict=True)
    return {"spearman": float(spearmanr(gap, distance).statistic), "methods": len(rows)}


def run_experiment(config: UnlearningStudyConfig, out: Path, *, overwrite: bool = False, resume: bool = False,
                   accept_data_change: bool = False) -> dict:
    """Every method on every domain's forget set, against the original (and the retrained) model."""
    from lethe.unlearning.independent_runs import run_independent
    from lethe.unlearning.report import write_experiment_report

    names = study_methods(config)
    for name in config.requests.methods or []:
        methods.get(name)
    known = target_run(config.model)
    if config.retrain and known is None and not (resolve_model_path(config.model).parent / "members.json").is_file():
        raise LetheError("retrain: true needs a model from `lethe pretrain` or `lethe target` (its recipe and members "
                         "are known)")
    if config.retrain and known is not None:
        forgotten = {name.split("/")[0] for name in read_json(known / "results.json")["target"]["splits"]
                     if name.endswith("/forget")}
        if set(config.domains) != forgotten or len(forgotten) != 1:
            raise LetheError(f"the target in {known} trained on the forget sets of {sorted(forgotten)}: its retrain is "
                             f"exact only for unlearning one domain's forget set, so set domains=[<that domain>] "
                             f"(asked for {config.domains})")
    for domain in config.domains:  # every cell's settings, before any work
        for method in names:
            cell_config(config, domain, method)
    if config.u_mia_shadows():
        known_origin(config.model)
    with Run.start(out, "experiment unlearning", config, overwrite=overwrite, resume=resume,
                   accept_data_change=accept_data_change) as run:
        run.record_data(find_splits(config.data))
        by_domain: dict[str, dict] = {}
        agreement, blinds, requests = {}, {}, {}
        for domain in config.domains:
            run_independent(config, domain, run.path, names)  # with --jobs N: the runs below, N at a time
            originals = original_scores(config, domain, run.path)
            blinds[domain] = domain_blind(config, domain, run.path)
            retrained = retrained_scores(config, domain, run.path) if config.retrain else None
            rows: dict[str, dict] = {"original": unlearning_metrics(originals, config.unlearn.eval)}
            if retrained is not None:
                rows["retrained"] = unlearning_metrics(retrained, config.unlearn.eval)
                for who, its_scores in (("original", originals), ("retrained", retrained)):  # the latter: reference
                    rows[who]["retrain_distance"] = retrain_distance(its_scores, retrained, config.unlearn.eval)
            scores = {"original": originals, **({"retrained": retrained} if retrained is not None else {})}
            for method in names:
                cell_dir = run.path / "runs" / domain / method
                results = run_cell(config, domain, method, cell_dir, originals)
                rows[method] = cell_summary(results, retrained, config, cell_dir)
                if "diverged" not in results:
                    scores[method] = model_scores(config, domain, run.path, method)
            if config.any_attack():
                for who, found in domain_attacks(config, domain, run.path, names, scores).items():
                    rows[who] |= found
            if config.u_mia_shadows():
                cells = {method: cell_config(config, domain, method) for method in names if method in scores}
                for who, found in study_u_mia(config, domain, run.path, scores, cells).items():
                    rows[who]["u_mia"] = found
            if config.requests.any_request():
                requests[domain] = answer_requests(config, domain, run.path / "requests" / domain, originals,
                                                   config.requests.methods or names, run.path / "runs" / domain)
            by_domain[domain] = rows
            if retrained is not None:
                agreement[domain] = yardstick_agreement({m: rows[m] for m in names if m in rows})
        results: dict[str, Any] = {}
        for name in ["original", *(["retrained"] if config.retrain else []), *names]:
            complete = [by_domain[d][name] for d in config.domains if "diverged" not in by_domain[d][name]]
            results[name] = _mean_tree(complete) if complete else {"diverged": True}
        results["by_domain"] = by_domain
        if any(blinds.values()):
            results["blind"] = blinds
        if config.retrain:
            results["yardstick_agreement"] = agreement
        if requests:
            results["requests"] = requests
        run.write_results(results)
        write_experiment_report(results, config, run.path)
    return results


def run_sweep(config: UnlearningStudyConfig, out: Path, *, overwrite: bool = False, resume: bool = False,
              accept_data_change: bool = False) -> dict:
    """Method × learning rate × steps (× domain): Yao et al.'s robustness grid."""
    from lethe.unlearning.independent_runs import run_sweep_cells
    from lethe.unlearning.report import write_sweep_report

    names = study_methods(config)
    for lr in config.grid.lr:  # every cell's settings, before any work
        for steps in config.grid.steps:
            refuse_no_updates(cell_config(config, config.domains[0], names[0], sweep_overrides(lr, steps)).train,
                              steps)
    with Run.start(out, "sweep", config, overwrite=overwrite, resume=resume,
                   accept_data_change=accept_data_change) as run:
        run.record_data(find_splits(config.data))
        grid = [(domain, method, lr, steps) for domain in config.domains for method in names
                for lr in config.grid.lr for steps in config.grid.steps]
        where = {point: run.path / "cells" / point[0] / point[1] / f"lr={point[2]:g},steps={point[3]}"
                 for point in grid}
        run_sweep_cells(config, [(domain, method, where[domain, method, lr, steps], sweep_overrides(lr, steps))
                                 for domain, method, lr, steps in grid], run.path)  # with --jobs N, N at a time
        cells = []
        for domain in config.domains:
            originals = original_scores(config, domain, run.path)
            before = unlearning_metrics(originals, config.unlearn.eval)
            for point in (point for point in grid if point[0] == domain):
                _, method, lr, steps = point
                results = run_cell(config, domain, method, where[point], originals, sweep_overrides(lr, steps))
                cells.append({"domain": domain, "method": method, "lr": lr, "steps": steps,
                              **sweep_metrics(before, results)})
        results = {"cells": cells}
        run.write_results(results)
        write_sweep_report(results, run.path)
    return results


def sweep_metrics(before: dict, results: dict) -> dict:
    """The two axes of Yao et al.'s Figure 2: how unseen the forget set looks, how much utility is left."""
    if "diverged" in results:
        return {"diverged": True, "collapsed": False, "forget_approx_ratio": None, "utility_ratio": None}
    after = results["after"]["ppl"]
    return {"diverged": False, "collapsed": results["after"].get("collapsed", False),
            "forget_approx_ratio": after["forget"] / after["approximate"],
            "utility_ratio": before["ppl"]["general"] / after["general"],
            "mia_auc": results["after"]["mia"]["auc"]}
