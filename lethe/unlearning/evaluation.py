"""How well a model forgot: perplexity per role, Min-K% membership inference, the approximate-retraining
gap, distance to an exactly retrained model, and cost — all from saved per-token scores."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from scipy.stats import ks_2samp, spearmanr

from lethe.attacks import bootstrap_intervals, min_k_score, roc_metrics
from lethe.attacks.metrics import paired_auc_difference
from lethe.config import UnlearnEvalConfig
from lethe.data.chunking import Chunk, document_of
from lethe.data.roles import RunData, role_splits
from lethe.errors import LetheError
from lethe.perplexity import score_chunk_sets
from lethe.scoring import TokenScores

log = logging.getLogger("lethe")

def score_roles(model, tokenizer, data: RunData, batch_tokens: int,
                scores_dir: Path | None = None) -> dict[str, TokenScores]:
    """Every role's chunks scored once (saved under scores_dir/<split>), keyed by role."""
    chunked = {name: data.chunks[name] for name in data.splits.values()}
    scores = score_chunk_sets(model, chunked, batch_tokens, tokenizer.pad_token_id, scores_dir)
    return {role: scores[name] for role, name in data.splits.items()}


def load_role_scores(scores_dir: Path, domain: str) -> dict[str, TokenScores]:
    return {role: TokenScores.load(scores_dir / name) for role, name in role_splits(domain).items()}


def balanced_indices(members: int, nonmembers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal numbers of members and non-members, as in the paper: a seeded subsample of the larger set."""
    n = min(members, nonmembers)
    rng = np.random.default_rng(seed)
    pick = lambda size: np.sort(rng.choice(size, n, replace=False)) if size > n else np.arange(size)  # noqa: E731
    return pick(members), pick(nonmembers)


def _balanced(members: np.ndarray, nonmembers: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    chosen_members, chosen_nonmembers = balanced_indices(len(members), len(nonmembers), seed)
    return members[chosen_members], nonmembers[chosen_nonmembers]


def split_blind(forget: list[Chunk], approximate: list[Chunk], tokenizer, config: UnlearnEvalConfig) -> dict | None:
    """The blind baseline of the Min-K% attack's own samples (the same balanced forget and approximate chunks):
    if a text classifier separates them without the model, the attack's AUC says nothing about forgetting."""
    if config.blind is None:
        return None
    from lethe.attacks.blind import blind_baseline

    chosen = balanced_indices(len(forget), len(approximate), config.seed)
    samples = [[chunks[i] for i in picked] for chunks, picked in zip((forget, approximate), chosen, strict=True)]
    texts = [[tokenizer.decode(chunk.input_ids) for chunk in group] for group in samples]
    return blind_baseline(*texts, folds=config.blind.folds, permutations=config.blind.permutations, seed=config.seed,
                          groups=[chunk.doc_id for group in samples for chunk in group])


def with_blind_verdicts(metrics: dict, blind: dict | None) -> dict:
    """Each Min-K% AUC, with the words that say whether it can be evidence beside the blind baseline."""
    if blind is not None:
        from lethe.attacks.blind import blind_verdict

        for mia in (metrics["mia"], *metrics["mia_by_k"].values()):
            mia["blind_verdict"] = blind_verdict(mia["auc"], None, blind)
    return metrics


def membership(forget: TokenScores, approximate: TokenScores, config: UnlearnEvalConfig) -> dict[str, dict]:
    """Min-K% MIA, members = forget chunks, non-members = approximate chunks, for every K."""
    by_k = {}
    for k in sorted({*config.mink_k, config.headline_k}):
        members, nonmembers = _balanced(min_k_score(forget, k), min_k_score(approximate, k), config.seed)
        by_k[str(k)] = roc_metrics(members, nonmembers)
    return by_k


def headline_mink(scores: dict[str, TokenScores], config: UnlearnEvalConfig) -> tuple[np.ndarray, np.ndarray]:
    """The headline Min-K% scores of the forget (members) and approximate (non-members) chunks, balanced as the
    AUC is."""
    k = config.headline_k
    return _balanced(min_k_score(scores["forget"], k), min_k_score(scores["approximate"], k), config.seed)


def log_ppl_ratio(forget: TokenScores, approximate: TokenScores) -> float:
    """log(forget PPL / approximate PPL): < 0 still remembered, 0 looks unseen, > 0 pushed past unseen."""
    return math.log(forget.perplexity() / approximate.perplexity())


def approximate_gap(forget: TokenScores, approximate: TokenScores, k: int) -> dict[str, float]:
    """0 when the forget set looks like unseen same-domain data, the state retraining would reach.

    mink_ks: Kolmogorov–Smirnov distance between the two Min-K% score distributions.
    """
    return {"log_ppl_ratio": log_ppl_ratio(forget, approximate),
            "mink_ks": float(ks_2samp(min_k_score(forget, k), min_k_score(approximate, k)).statistic)}


# predictions within 2% of the entropy of a uniform guess over the vocabulary say nothing about their context
UNIFORM = 0.98
# a forget or retain perplexity this many times the original model's is destruction, not forgetting: gradient
# ascent at a high rate leaves forget perplexity near 1e10 while its predictions are far from uniform
ABSOLUTE_COLLAPSE = 10.0


def collapse(scores: dict[str, TokenScores], vocab_size: int,
             original: dict[str, TokenScores] | None = None) -> str | None:
    """Why the model is broken rather than forgetful, or None: its predictive distribution on held-out general
    text is (near) uniform over the vocabulary, or (given the original model's scores) its forget or retain
    perplexity is over ABSOLUTE_COLLAPSE times the original's. Its forget set then looks as unseen as everything
    else, which the MIA AUC and the gap would otherwise report as ideal (or beyond ideal) unlearning."""
    entropy = float(-scores["general"].vocab_mean.astype(np.float64).mean())  # vocab_mean = E_p[log p]
    uniform = math.log(vocab_size)
    if entropy >= UNIFORM * uniform:
        return (f"its predictions on held-out general text are uniform (entropy {entropy:.2f} nats; a uniform guess "
                f"over its {vocab_size}-token vocabulary: {uniform:.2f})")
    for role in ("forget", "retain"):
        if original is None or role not in scores or role not in original:
            continue
        now, before = scores[role].perplexity(), original[role].perplexity()
        if not now <= ABSOLUTE_COLLAPSE * before:  # NaN included
            return (f"its {role} perplexity {now:.3g} is over {ABSOLUTE_COLLAPSE:g}× the original model's "
                    f"({before:.3g})")
    return None


def unlearning_metrics(scores: dict[str, TokenScores], config: UnlearnEvalConfig,
                       vocab_size: int | None = None, original: dict[str, TokenScores] | None = None) -> dict:
    """The numbers of one model; with `vocab_size`, also whether it has collapsed (`collapsed`, and why; against
    the `original` model's perplexities too when given)."""
    by_k = membership(scores["forget"], scores["approximate"], config)
    members, nonmembers = headline_mink(scores, config)
    metrics = {
        "ppl": {role: s.perplexity() for role, s in scores.items()},
        "accuracy": {role: s.accuracy() for role, s in scores.items()},
        "mia": {**by_k[str(config.headline_k)],
                "ci95": bootstrap_intervals(members, nonmembers, seed=config.seed)["auc"]},
        "mia_by_k": by_k,
        "approx_gap": approximate_gap(scores["forget"], scores["approximate"], config.headline_k),
    }
    if vocab_size is not None:
        reason = collapse(scores, vocab_size, original)
        metrics["collapsed"] = reason is not None
        if reason is not None:
            metrics["collapse"] = reason
            log.warning("the model has collapsed: %s; its MIA AUC and gap do not measure forgetting", reason)
    return metrics


def retrain_distance(unlearned: dict[str, TokenScores], retrained: dict[str, TokenScores],
                     config: UnlearnEvalConfig) -> dict[str, float]:
    """How far an unlearned model is from the model retrained without the forget set (0 or 1 = same)."""
    if unlearned["forget"].ids != retrained["forget"].ids:
        raise LetheError("unlearned and retrained models were scored on different forget chunks")
    k = str(config.headline_k)
    auc_unlearned = membership(unlearned["forget"], unlearned["approximate"], config)[k]["auc"]
    auc_retrained = membership(retrained["forget"], retrained["approximate"], config)[k]["auc"]
    # the same chunks under both models: a paired interval of the AUC difference
    paired = paired_auc_difference(*headline_mink(unlearned, config), *headline_mink(retrained, config),
                                   seed=config.seed)
    return {
        "forget_ppl_ratio": unlearned["forget"].perplexity() / retrained["forget"].perplexity(),
        "forget_ppl_ratio_ci95": paired_ppl_ratio(document_nll(unlearned["forget"]), document_nll(retrained["forget"]),
                                                  seed=config.seed)["ci95"],
        "mia_auc": auc_unlearned - auc_retrained,
        "mia_auc_ci95": paired["ci95"],
        # MUSE's PrivLeak: relative AUC gap to the retrained model
        "privleak": (auc_unlearned - auc_retrained) / auc_retrained,
        "loss_spearman": float(spearmanr(unlearned["forget"].sample_nll(), retrained["forget"].sample_nll()).statistic),
        "forget_quality": forget_quality(unlearned["forget"].sample_nll(), retrained["forget"].sample_nll()),
    }


def document_nll(scores: TokenScores) -> dict[str, list[float]]:
    """Per document: the summed negative log-likelihood of its predicted tokens and their count, what a paired
    interval over documents resamples (a document's chunks are not independent of one another)."""
    out: dict[str, list[float]] = {}
    sums = scores.sample_nll() * scores.lengths if len(scores) else []
    for chunk_id, nll, tokens in zip(scores.ids, sums, scores.lengths, strict=True):
        row = out.setdefault(document_of(chunk_id), [0.0, 0])
        row[0] += float(nll)
        row[1] += int(tokens)
    return out


def paired_ppl_ratio(model: dict[str, list[float]], reference: dict[str, list[float]], *, resamples: int = 1000,
                     seed: int = 0) -> dict[str, float | list[float]]:
    """`model`'s perplexity over `reference`'s on the same documents (document_nll of each), with a 95% percentile
    interval from resampling documents, the same draws for both models."""
    if model.keys() != reference.keys() or not model:
        raise LetheError("a paired perplexity ratio needs both models scored on the same documents")
    ids = sorted(model)
    nll_a, nll_b = (np.array([side[i][0] for i in ids]) for side in (model, reference))
    tokens = np.array([model[i][1] for i in ids], dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(ids), (resamples, len(ids)))
    log_ratios = (nll_a[draws].sum(1) - nll_b[draws].sum(1)) / tokens[draws].sum(1)
    low, high = np.percentile(log_ratios, [2.5, 97.5])
    return {"ratio": float(np.exp((nll_a.sum() - nll_b.sum()) / tokens.sum())),
            "ci95": [float(np.exp(low)), float(np.exp(high))], "documents": len(ids)}


def forget_quality(unlearned: np.ndarray, retrained: np.ndarray) -> float:
    """TOFU's forget quality (Maini et al., 2024): the p-value of a two-sample Kolmogorov–Smirnov test between the
    unlearned and the retrained model's per-sample statistic on the forget set (here the mean token loss, since
    the data has no question–answer pairs for TOFU's truth ratio). High: indistinguishable from the retrain."""
    return float(ks_2samp(unlearned, retrained).pvalue)


def training_flops(parameters: int, tokens: float) -> float:
    """The usual 6·N·D estimate (forward + backward) used by Yao et al. for both sides of the ratio."""
    return 6.0 * parameters * tokens


def cost(parameters: int, tokens: int, seconds: float, pretrain: dict | None,
         reference_tokens: int = 0) -> dict[str, float | None]:
    """`reference_tokens`: forwarded through the frozen original model (2·N each), e.g. once per forget example
    for NPO's and the adversarial method's cached reference; its time is already in `seconds`."""
    flops = training_flops(parameters, tokens) + 2.0 * parameters * reference_tokens
    result: dict[str, float | None] = {"flops": flops, "seconds": seconds, "tokens": tokens,
                                       "reference_tokens": reference_tokens,
                                       "ratio_vs_pretrain": None, "seconds_ratio_vs_pretrain": None}
    if pretrain and pretrain.get("tokens"):
        result["ratio_vs_pretrain"] = training_flops(parameters, pretrain["tokens"]) / flops
    if pretrain and pretrain.get("seconds"):
        result["seconds_ratio_vs_pretrain"] = pretrain["seconds"] / seconds
    return result


def eval_unlearning(config, out: Path, *, overwrite: bool = False) -> dict:
    """`lethe eval unlearning`: score the unlearned (and original, retrained) models on one domain's roles, and
    run the configured attacks on unlearning (quantization, relearning, verbatim memorisation) on each."""
    from lethe.models import load_model, model_context
    from lethe.runs import Run
    from lethe.unlearning.attacks import attack_model, attack_results

    models = {"unlearned": config.model, "original": config.original, "retrained": config.retrained}
    cell = None
    if config.u_mia_shadows():  # refused before any model is scored when the shadows cannot be made
        from lethe.unlearning.u_mia import unlearning_run

        cell = unlearning_run(config.model)
    with Run.start(out, "eval unlearning", config, overwrite=overwrite) as run:
        scores, attacked, blind, vocabularies, data = {}, {}, None, {}, None
        for role, name in models.items():
            if name is None:
                continue
            model, tokenizer = load_model(name)
            vocabularies[role] = model.config.vocab_size
            if data is None:  # every model is scored on the chunks of the first one's tokenizer
                data = RunData.load(config.data, config.domain, tokenizer, config.chunk, model_context(model))
                blind = split_blind(data.role_chunks("forget"), data.role_chunks("approximate"), tokenizer,
                                    config.eval)
            scores[role] = score_roles(model, tokenizer, data, config.eval.batch_tokens, run.scores_dir / role)
            if config.any_attack():
                attacked[role] = attack_model(model, tokenizer, data, scores[role], config, config.eval,
                                              run.scores_dir / role / "attacks")
        results = {role: with_blind_verdicts(unlearning_metrics(s, config.eval, vocabularies[role],
                                                                scores.get("original")), blind)
                   for role, s in scores.items()}
        if "retrained" in scores:
            for role in ("unlearned", "original"):
                if role in scores:
                    results[role]["retrain_distance"] = retrain_distance(scores[role], scores["retrained"], config.eval)
        for role, found in attack_results(scores, attacked, config, config.eval).items():
            results[role] |= found
        if cell is not None:
            from lethe.unlearning.u_mia import eval_u_mia

            for role, found in eval_u_mia(config, cell, scores, run.path).items():
                results[role]["u_mia"] = found
        if blind is not None:
            results["blind"] = blind
        run.write_results(results)
    return results
