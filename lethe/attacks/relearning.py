"""The relearning attack on unlearning (Hu et al., 2024; Lynch et al., 2024): a few fine-tuning steps on a small
part of the forget set, or on same-domain retain text with no forget text at all, may bring "forgotten" data back.

Each model (unlearned, original, exact retrain) is fine-tuned alike with the plain language-model loss, and the
forget documents it was not fine-tuned on are scored before and after each step count. Comparing the unlearned
model's recovery with the retrain's separates knowledge that comes back from what any model learns in k steps.
"""

from __future__ import annotations

import copy
import math

from lethe.config import RelearnConfig, TrainConfig, UnlearnEvalConfig
from lethe.data.chunking import Chunk
from lethe.data.roles import RunData
from lethe.scoring import TokenScores

MODES = ("forget_set", "retain_only")


def split_forget(data: RunData, fraction: float) -> tuple[list[Chunk], list[Chunk]]:
    """The forget chunks of the first `fraction` of forget documents (fine-tuned on), and the rest (measured)."""
    documents = sorted(doc.id for doc in data.role_documents("forget"))
    trained = set(documents[: max(1, round(fraction * len(documents)))])
    if len(trained) == len(documents):
        trained.discard(documents[-1])  # keep one document to measure on
    chunks = data.role_chunks("forget")
    return [c for c in chunks if c.doc_id in trained], [c for c in chunks if c.doc_id not in trained]


def relearning_curves(model, tokenizer, data: RunData, scores: dict[str, TokenScores], config: RelearnConfig,
                      evaluation: UnlearnEvalConfig) -> dict[str, list[dict[str, float]]]:
    """Per mode, the held-out forget set's perplexity, gap and Min-K% AUC at 0 steps (from the model's role
    `scores`, already taken) and after each step count."""
    from lethe.perplexity import score_chunk_sets
    from lethe.unlearning.evaluation import document_nll, log_ppl_ratio, membership

    trained_on, measured = split_forget(data, config.forget_fraction)
    sets = {"forget": measured, "approximate": data.role_chunks("approximate")}

    def point(forget: TokenScores, approximate: TokenScores, steps: int) -> dict[str, float]:
        return {"steps": steps, "forget_ppl": forget.perplexity(), "approx_gap": log_ppl_ratio(forget, approximate),
                "mia_auc": membership(forget, approximate, evaluation)[str(evaluation.headline_k)]["auc"],
                "forget_documents": document_nll(forget)}  # what paired intervals against the retrain resample

    def measure(candidate, steps: int) -> dict[str, float]:
        fresh = score_chunk_sets(candidate, sets, evaluation.batch_tokens, tokenizer.pad_token_id)
        return point(fresh["forget"], fresh["approximate"], steps)

    start = point(scores["forget"].subset({c.id for c in measured}), scores["approximate"], 0)
    train = TrainConfig(lr=config.lr, batch_size=config.batch_size, max_steps=max(config.steps), epochs=1e6,
                        warmup_ratio=0, scheduler="constant", seed=config.seed,
                        eval_every=math.gcd(*config.steps), log_every=max(config.steps))
    return {mode: [start, *_fine_tuned(model, tokenizer, chunks, train, config.steps, measure, mode)]
            for mode, chunks in (("forget_set", trained_on), ("retain_only", data.role_chunks("retain")))}


def _fine_tuned(model, tokenizer, chunks: list[Chunk], train: TrainConfig, steps: list[int], measure,
                mode: str) -> list[dict[str, float]]:
    """A copy of `model` fine-tuned on `chunks`, measured after each of `steps`."""
    from lethe.engine import Trainer, objectives

    points: list[dict[str, float]] = []

    def evaluate(candidate) -> dict[str, float]:
        if trainer.step in steps:
            points.append(measure(candidate, trainer.step))
            return {"forget_ppl": points[-1]["forget_ppl"]}
        return {}

    trainer = Trainer(copy.deepcopy(model), objectives.get("lm")(), {"train": chunks}, train,
                      pad_id=tokenizer.pad_token_id, evaluator=evaluate, desc=f"relearn ({mode})")
    trainer.fit()
    return points


# `recovered` divides by the rise in log forget perplexity over the original's: below 5% it is noise
MIN_RISE = math.log(1.05)


def recovery(curves: dict[str, dict[str, list[dict]]], steps: int) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and mode, after `steps` steps: `recovered`, the share of the model's rise in log forget perplexity
    over the original's that the steps undo (None, with `recovered_note`, when the rise is under 5%); and for every
    model but the retrain, `recovered_beyond_retrain`, what it undoes beyond the log-perplexity drop the exact retrain
    gets from the same steps, as a share of the same rise; and `forget_ppl_ratio`, its held-out forget perplexity
    after the steps over the retrain's after the same steps, with `forget_ppl_ratio_ci95` (documents resampled).
    """
    from lethe.unlearning.evaluation import paired_ppl_ratio

    def at(who: str, mode: str, when: int) -> float:
        return math.log(next(p["forget_ppl"] for p in curves[who][mode] if p["steps"] == when))

    def documents_at(who: str, mode: str, when: int) -> dict | None:
        return next(p.get("forget_documents") for p in curves[who][mode] if p["steps"] == when)

    out: dict[str, dict[str, dict[str, float]]] = {}
    for who in curves:
        for mode in MODES:
            drop = at(who, mode, 0) - at(who, mode, steps)
            row = {"steps": steps, "drop": drop}
            if who != "original" and "original" in curves:
                rise = at(who, mode, 0) - at("original", mode, 0)
                measurable = rise > MIN_RISE
                row["recovered"] = drop / rise if measurable else None
                if not measurable:  # a share of a near-zero rise swings without bound from noise
                    row["recovered_note"] = (f"forget perplexity {math.exp(rise):.3f}× the original's: under "
                                             f"{math.exp(MIN_RISE):.2f}×, nothing measurable was forgotten to recover")
                if who != "retrained" and "retrained" in curves and measurable:
                    row["recovered_beyond_retrain"] = (drop - (at("retrained", mode, 0) - at("retrained", mode, steps))
                                                       ) / rise
            if who != "retrained" and "retrained" in curves:  # below 1: it now knows the documents better than a
                # model that never saw them does after the same steps
                row["forget_ppl_ratio"] = math.exp(at(who, mode, steps) - at("retrained", mode, steps))
                documents = [documents_at(side, mode, steps) for side in (who, "retrained")]
                if all(documents):  # curves saved before per-document sums have no interval
                    row["forget_ppl_ratio_ci95"] = paired_ppl_ratio(*documents)["ci95"]
            out.setdefault(who, {})[mode] = row
    return out
