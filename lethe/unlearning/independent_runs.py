"""`--jobs N` for `lethe experiment unlearning` and `lethe sweep`: their independent runs, N at a time (one thread
each; one GPU each where there are several), before the study's own pass reads them back in order.

An unlearning study's runs of one domain fall in three stages, each waiting for the one before:
1. the original's scores, the retrain (trained where the study trains it) and its scores, every U-MIA shadow's
   training and its scores of the candidates;
2. every method's unlearning run, and the attacks (quantization, relearning, verbatim memorisation) on the original
   and the retrain;
3. every method unlearning every shadow, and the attacks on every method's model.
Each task is a run directory (or a scores directory) that the sequential pass in lethe/unlearning/study.py finds
finished and reads back, so the numbers do not depend on N, with one job nothing here runs, and an interrupted study
resumes run by run under any N. What stays sequential is cheap: the blind baseline, deletion requests, the tables.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lethe.config import UnlearningStudyConfig
from lethe.errors import TrainingDiverged
from lethe.parallel import run_tasks
from lethe.unlearning.shadows import Shadows, deal_shadows
from lethe.unlearning.study import (
    attack_subject,
    attacked,
    cell_config,
    model_scores,
    original_scores,
    retrained_scores,
    run_cell,
)
from lethe.unlearning.u_mia import loading, shadow_budget

log = logging.getLogger("lethe")


def run_independent(config: UnlearningStudyConfig, domain: str, out: Path, names: list[str]) -> None:
    """A domain's runs of the experiment, `config.jobs` at a time (nothing with one job)."""
    if config.jobs <= 1:
        return
    shadows, each_shadow = None, range(0)
    if config.u_mia_shadows():
        shadows = deal_shadows(config.model, config.data, domain, config.u_mia, out / "u_mia" / domain,
                               config.unlearn.chunk, config.unlearn.eval.batch_tokens, loading(config.unlearn))
        each_shadow = range(len(shadows.keep))
    log.info("%s: the original, the retrain and the shadows, %d at a time", domain, config.jobs)
    run_tasks({"original": (original_scores, (config, domain, out)),
               **({"retrain": (retrained_scores, (config, domain, out))} if config.retrain else {}),
               **{f"shadow {k}": (_train_shadow, (shadows, k)) for k in each_shadow}}, config.jobs,
              f"{domain}, references")
    subjects = ["original", *(["retrained"] if config.retrain else [])] if config.any_attack() else []
    log.info("%s: the unlearning runs and the first attacks, %d at a time", domain, config.jobs)
    cells = run_tasks({**{method: (_unlearning_run, (config, domain, method, out / "runs" / domain / method, out))
                          for method in names},
                       **{f"attack on {who}": (_attack, (config, domain, out, who)) for who in subjects}},
                      config.jobs, f"{domain}, unlearning")[:len(names)]
    unlearned = [method for method, results in zip(names, cells, strict=True) if "diverged" not in results]
    budget = shadow_budget(config.model, config.unlearn.pretrain_tokens)
    attacked = unlearned if config.any_attack() else []
    log.info("%s: the shadows' unlearning and the methods' attacks, %d at a time", domain, config.jobs)
    run_tasks({**{f"{method} on shadow {k}": (_unlearn_shadow, (shadows, method, cell_config(config, domain, method),
                                                                budget, k))
                  for method in unlearned for k in each_shadow},
               **{f"attack on {method}": (_attack, (config, domain, out, method)) for method in attacked}},
              config.jobs, f"{domain}, shadows' unlearning")


def run_sweep_cells(config: UnlearningStudyConfig, cells: list[tuple[str, str, Path, dict]], out: Path) -> None:
    """A sweep's cells (domain, method, directory, train overrides), `config.jobs` at a time, each domain's original
    scored first (nothing with one job)."""
    if config.jobs <= 1:
        return
    run_tasks({domain: (original_scores, (config, domain, out)) for domain in config.domains}, config.jobs,
              "originals")
    run_tasks({f"{domain}, {method}, {where.name}": (_unlearning_run, (config, domain, method, where, out, overrides))
               for domain, method, where, overrides in cells}, config.jobs, "sweep cells")


def _unlearning_run(config: UnlearningStudyConfig, domain: str, method: str, where: Path, out: Path,
                    train_overrides: dict | None = None) -> dict:
    # the original's scores, saved by the stage before, spare every run scoring it again
    return run_cell(config, domain, method, where, original_scores(config, domain, out), train_overrides)


def _train_shadow(shadows: Shadows, k: int) -> None:
    shadows.train(k)
    shadows.candidate_scores(shadows.trained(k))


def _unlearn_shadow(shadows: Shadows, method: str, cell, budget: float | None, k: int) -> None:
    try:
        shadows.unlearn_shadow(method, cell, budget, k)
    except TrainingDiverged:  # the study's own pass meets it again and records the method's U-MIA as skipped
        pass


def _attack(config: UnlearningStudyConfig, domain: str, out: Path, who: str) -> None:
    attacked(config, domain, *attack_subject(config, domain, out, who),
             scores=model_scores(config, domain, out, who))
