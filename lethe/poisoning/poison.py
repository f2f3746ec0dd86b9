"""`lethe poison`: the released model of a supply-chain privacy attack, and its baselines.

forget_to_flourish (Rashid et al.): gradient ascent on noisy copies D'_c of the targets, while the
loss on a generic reference set D* stays within a bound: the step that crosses it is undone and
poisoning stops (`bound.on_cross: stop`), or descent on D* projects the weights back within it before
the ascent resumes (`project`), or every step also descends on D* and the last weights within the bound
are released (`penalty`). The baselines run through the same engine: `benign` (released unchanged),
`precurious` (warm fine-tuning on auxiliary same-distribution data) and `privacy_backdoor`
(Wen et al.'s objective on the clean targets). Each variant is a unit of `lethe.poisoning.releases`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from lethe.config import PoisonConfig
from lethe.data.chunking import Chunk, chunk_documents
from lethe.data.pii import read_target_records
from lethe.data.splits import load_disjoint_sets
from lethe.engine import Trainer
from lethe.errors import LetheError
from lethe.models import load_configured, model_context, save_model
from lethe.poisoning.releases import PoisoningInputs, variants
from lethe.processes import from_main_process, is_main_process
from lethe.runs import Run
from lethe.scoring import score_chunks

log = logging.getLogger("lethe")


def mean_loss(model, chunks: list[Chunk], tokenizer, batch_tokens: int) -> float:
    """Token-weighted mean NLL (log perplexity)."""
    scores = score_chunks(model, chunks, batch_tokens=batch_tokens, pad_id=tokenizer.pad_token_id, progress=False)
    return math.log(scores.perplexity())


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 1e-9 else None


def poison(config: PoisonConfig, out: Path, *, overwrite: bool = False) -> dict:
    main = is_main_process()  # every process trains and checks the bound; the main one alone writes
    results: dict = {}
    with Run.start(out, "poison", config, overwrite=overwrite, seed=config.seed) as run:
        targets_docs, reference_docs = load_disjoint_sets(
            run, {"targets": config.targets, "reference": config.reference}, config.data, ("target", "reference"),
            "the bound must be measured on data the ascent does not touch")
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

        tracked = clean_targets[:config.reference_chunks]  # the targets' loss followed step by step, on a sample

        def evaluate(current) -> dict[str, float]:
            return {"reference_loss": loss_of(current, bound_chunks), "target_loss": loss_of(current, tracked),
                    "bound": limit}

        inputs = PoisoningInputs(config, model, tokenizer, clean_targets, read_target_records(Path(config.targets)),
                                 auxiliary, bound_chunks, limit, context)
        plan = variants.get(config.variant)(inputs)
        train_result, bound = None, plan.bound if plan else None
        if plan is not None:
            # the bound is checked after every step; unbounded releases evaluate as their config says
            train = config.train.model_copy(update={"eval_every": 1}) if bound else config.train
            trainer = Trainer(model, plan.objective, plan.groups, train,
                              pad_id=tokenizer.pad_token_id, evaluator=evaluate, callbacks=[bound] if bound else [],
                              desc=f"poison ({config.variant})")
            train_result = trainer.fit()
            if bound:
                bound.restore()  # training may end mid-projection or past the bound (penalty): release in bound
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
                      **(bound.summary() if bound else {"crossed_at_step": None, "crossings": 0,
                                                         "projection_failed": False})},
            "loss": {"before": before, "after": after},
            # how much more the targets were pushed than the generic data the bound watches
            "selectivity": _ratio(after["targets"] - before["targets"], after["reference"] - before["reference"]),
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
