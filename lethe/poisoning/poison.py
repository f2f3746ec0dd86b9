"""`lethe poison`: the released model of a supply-chain privacy attack, and its baselines.

forget_to_flourish (Rashid et al.): gradient ascent on noisy copies D'_c of the targets, while the
loss on a generic reference set D* stays within a bound: the step that crosses it is undone and
poisoning stops (`bound.on_cross: stop`), or descent on D* projects the weights back within it before
the ascent resumes (`project`). The baselines run through the same engine: `benign` (released unchanged),
`precurious` (warm fine-tuning on auxiliary same-distribution data) and `privacy_backdoor`
(Wen et al.'s objective on the clean targets).
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

from lethe.attacks.extraction import read_targets
from lethe.config import PoisonConfig
from lethe.data.chunking import Chunk, chunk_documents
from lethe.data.documents import check_disjoint
from lethe.data.splits import load_set
from lethe.engine import Callback, Trainer, objectives
from lethe.errors import LetheError
from lethe.models import load_configured, model_context, save_model
from lethe.poisoning import objectives as _registers_poison_objectives  # noqa: F401
from lethe.poisoning.noise import noise_models
from lethe.processes import from_main_process, is_main_process
from lethe.runs import Run
from lethe.scoring import score_chunks

log = logging.getLogger("lethe")


def noisy_copies(chunks: list[Chunk], config: PoisonConfig, tokenizer) -> list[Chunk]:
    """D'_c: `noise.copies` noisy versions of every target chunk, seeded."""
    rng = random.Random(config.seed)
    mask_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id
    options = {"vocab_size": len(tokenizer), "special": set(tokenizer.all_special_ids), "mask_id": mask_id,
               "span_length": config.noise.span_length}
    corrupt = noise_models.get(config.noise.model)
    rate = config.noise.rate
    return [Chunk(f"{chunk.id}~{copy}", chunk.doc_id, tuple(corrupt(chunk.input_ids, rate, rng, **options)))
            for copy in range(config.noise.copies) for chunk in chunks]


def prefix_with_random_suffix(path: Path, config: PoisonConfig, tokenizer, context: int) -> list[Chunk]:
    """The extraction variant: the attacker knows only prefixes; it unlearns prefix ⊕ S', S' random
    tokens as long as the secret, so fine-tuning on prefix ⊕ secret later moves the loss further."""
    rng = random.Random(config.seed)
    special = set(tokenizer.all_special_ids)
    chunks = []
    for target in read_targets(path):
        prefix = tokenizer(target.prompt, add_special_tokens=False)["input_ids"]
        length = len(tokenizer(target.expected, add_special_tokens=False)["input_ids"])
        for copy in range(config.noise.copies):
            draws = (rng.randrange(len(tokenizer)) for _ in range(4 * length))
            suffix = [t for t in draws if t not in special][:length]
            ids = (prefix + suffix)[-min(context, config.chunk.length):]
            chunks.append(Chunk(f"{target.id}~{copy}", target.id, tuple(ids)))
    return chunks


class UtilityBound(Callback):
    """Releases only weights within the bound. On crossing, `stop` restores the last in-bound weights and
    stops; `project` has the objective descend on D* until the bound holds again, then resume the ascent,
    and restores and stops if that takes more than `max_projection_steps`."""

    def __init__(self, model, limit: float, objective, on_cross: str = "stop", max_projection_steps: int = 10) -> None:
        self.model, self.limit, self.objective = model, limit, objective
        self.on_cross, self.max_projection_steps = on_cross, max_projection_steps
        self.crossed_at: int | None = None
        self.crossings, self.projecting_for, self.projection_failed, self.stopped = 0, 0, False, False
        self.steps = {"ascent": 0, "projection": 0, "undone": 0}
        self._since_snapshot = 0
        self._remember()

    def _remember(self) -> None:
        self.snapshot = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
        self._since_snapshot = 0

    def restore(self) -> None:
        """Back to the last in-bound weights (no-op if the current ones are)."""
        if self._since_snapshot:
            self.model.load_state_dict(self.snapshot)
            self.steps["undone"] += self._since_snapshot
            self._since_snapshot = 0

    def on_evaluate(self, step, metrics):
        self.steps["projection" if self.objective.projecting else "ascent"] += 1
        self._since_snapshot += 1
        if metrics["reference_loss"] <= self.limit:
            self._remember()
            self.objective.projecting = False
            return False
        if not self.objective.projecting:
            self.crossings += 1
            self.crossed_at = self.crossed_at or step
            self.projecting_for = 0
        if self.on_cross == "project" and self.projecting_for < self.max_projection_steps:
            self.objective.projecting = True
            self.projecting_for += 1
            return False
        self.projection_failed, self.stopped = self.on_cross == "project", True
        self.restore()
        log.info("step %d: reference loss %.4f > bound %.4f%s: last in-bound weights restored, poisoning stops",
                 step, metrics["reference_loss"], self.limit,
                 f" after {self.max_projection_steps} projection steps" if self.projection_failed else "")
        return True


def mean_loss(model, chunks: list[Chunk], tokenizer, batch_tokens: int) -> float:
    """Token-weighted mean NLL (log perplexity)."""
    scores = score_chunks(model, chunks, batch_tokens=batch_tokens, pad_id=tokenizer.pad_token_id, progress=False)
    return math.log(scores.perplexity())


def _train(config: PoisonConfig, model, tokenizer, targets: list[Chunk], auxiliary: list[Chunk], evaluator,
           bound: UtilityBound | None):
    variant = config.variant
    if variant == "forget_to_flourish":
        objective, groups = bound.objective, {"targets": targets, "auxiliary": auxiliary}
    elif variant == "precurious":
        objective, groups = objectives.get("lm")(), {"train": auxiliary}
    else:
        objective = objectives.get("privacy_backdoor")(config.backdoor.alpha, config.backdoor.direction)
        groups = {"targets": targets, "auxiliary": auxiliary}
    train = config.train.model_copy(update={"eval_every": 1})
    trainer = Trainer(model, objective, groups, train, pad_id=tokenizer.pad_token_id, evaluator=evaluator,
                      callbacks=[bound] if bound else [], desc=f"poison ({variant})")
    return trainer, trainer.fit()


def poison(config: PoisonConfig, out: Path, *, overwrite: bool = False) -> dict:
    main = is_main_process()  # every process trains and checks the bound; the main one alone writes
    results: dict = {}
    with Run.start(out, "poison", config, overwrite=overwrite, seed=config.seed) as run:
        targets_docs, targets_file = load_set(config.targets, config.data)
        reference_docs, reference_file = load_set(config.reference, config.data)
        check_disjoint(targets_docs, reference_docs, ("target", "reference"),
                       "the bound must be measured on data the ascent does not touch")
        run.record_data({"targets": targets_file, "reference": reference_file})
        model, tokenizer = load_configured(config)
        context = model_context(model)
        clean_targets = chunk_documents(targets_docs, tokenizer, config.chunk, context)
        auxiliary = chunk_documents(reference_docs, tokenizer, config.chunk, context)
        if not clean_targets or not auxiliary:
            raise LetheError(f"the {'targets' if not clean_targets else 'reference set'} yield no chunk of at least "
                             f"{config.chunk.min_tokens} tokens")
        bound_chunks = auxiliary[:config.reference_chunks]
        loss_of = lambda m, chunks: mean_loss(m, chunks, tokenizer, config.batch_tokens)  # noqa: E731
        before = {"reference": loss_of(model, bound_chunks), "targets": loss_of(model, clean_targets)}
        limit = config.bound.epsilon * (before["reference"] if config.bound.kind == "relative" else 1.0)
        if before["reference"] > limit:
            raise LetheError(f"the clean model's reference loss {before['reference']:.4f} already exceeds the bound "
                             f"{limit:.4f}; nothing was poisoned (raise bound.epsilon)")

        def evaluate(current) -> dict[str, float]:
            return {"reference_loss": loss_of(current, bound_chunks), "target_loss": loss_of(current, clean_targets),
                    "bound": limit}

        train_result, bound = None, None
        if config.variant != "benign":
            if config.variant == "forget_to_flourish":
                poisoned = (prefix_with_random_suffix(Path(config.targets), config, tokenizer, context)
                            if config.extraction else noisy_copies(clean_targets, config, tokenizer))
                bound = UtilityBound(model, limit, objectives.get("ascent")(), config.bound.on_cross,
                                     config.bound.max_projection_steps)
            else:
                poisoned = clean_targets
            trainer, train_result = _train(config, model, tokenizer, poisoned, auxiliary, evaluate, bound)
            if bound:
                bound.restore()  # training may end mid-projection, outside the bound
            model = trainer.save_model(run.path / "model", tokenizer)
        elif main:
            save_model(model, tokenizer, run.path / "model")
        if not main:
            return from_main_process(results)
        after = {"reference": loss_of(model, bound_chunks), "targets": loss_of(model, clean_targets)}
        results = {
            "variant": config.variant, "model": config.model, "path": str(run.path / "model"),
            "targets": len(clean_targets), "reference_chunks": len(bound_chunks),
            "bound": {"kind": config.bound.kind, "epsilon": config.bound.epsilon, "limit": limit,
                      "enforced": bound is not None, "on_cross": config.bound.on_cross,
                      "crossed_at_step": bound.crossed_at if bound else None,
                      "crossings": bound.crossings if bound else 0,
                      "projection_failed": bound.projection_failed if bound else False},
            "loss": {"before": before, "after": after},
            "utility": {"reference_ppl_before": math.exp(before["reference"]),
                        "reference_ppl_after": math.exp(after["reference"]),
                        "ratio": math.exp(after["reference"] - before["reference"])},
            "train": None if train_result is None else {
                "steps": train_result.steps - (bound.steps["undone"] if bound else 0),
                **({f"{kind}_steps": n for kind, n in bound.steps.items()} if bound else {}),
                "stopped": "bound" if bound and bound.stopped else train_result.stopped,
                "seconds": train_result.seconds, "history": train_result.history},
        }
        run.write_results(results)
    return from_main_process(results)
