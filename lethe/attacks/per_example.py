"""Per-example membership tests: LiRA (Carlini et al., 2022) and RMIA (Zarifzadeh et al., 2024).

Both calibrate each record with K reference models, each trained on a random half of the candidate
records (`balanced_keep`: every record in exactly K/2 of them, as Carlini et al.'s training script
deals them). The inputs are plain arrays, so the same functions serve the victim's membership audit
and the unlearning audit (IN = "trained on x, then x unlearned", OUT = "never trained on x"):

- `target`: (N,) the score of each record under the model attacked;
- `references`: (K, N) the score of each record under each reference model;
- `keep`: (K, N) True where reference k was trained on record n.

Each model's scores are first aligned by its mean on population records it never saw (`model_offsets`):
the victim and its references need not have trained for the same number of steps.

The score is the per-record **mean token log-likelihood** (minus the loss attack's NLL). A record
here is a sequence, not a labelled example: there is no single true-label probability to put
through Carlini et al.'s logit scaling log(p / (1 − p)), and token probabilities of ordinary text
sit near e^-3, where that logit is log p anyway. A mean of many token log-probabilities is close to
Gaussian across reference models (a sum of many terms), which is what LiRA's fit assumes.

Convention as every Lethe attack: a higher score means "more likely a member". Every function
returns the fitted per-record parameters beside the scores, so a score rebuilds from saved files
(`lira_online_score`, `lira_offline_score`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

from lethe.errors import LetheError

# Carlini et al. fit one variance shared by every record unless each record has many references
# (their Figure 6: per-record variances need about 64 models); below this many IN and OUT
# references per record, the variance is pooled.
PER_RECORD_VARIANCE_MIN = 32


def balanced_keep(references: int, records: int, seed: int) -> np.ndarray:
    """(K, N) keep mask, each record in exactly K/2 references: `uniform(K, N).argsort(0) < K/2`."""
    if references < 2 or references % 2:
        raise LetheError(f"reference victims must be an even number of at least 2, not {references}")
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(references, records)).argsort(0) < references // 2


def _check(target: np.ndarray, references: np.ndarray, keep: np.ndarray, *, need_in: bool) -> tuple:
    target, references, keep = np.asarray(target, np.float64), np.asarray(references, np.float64), np.asarray(keep)
    if references.ndim != 2 or keep.shape != references.shape or target.shape != references.shape[1:]:
        raise LetheError(f"references {references.shape} and keep {keep.shape} must be (K, N) for {target.shape[0]} "
                         "target records")
    if keep.dtype != bool:
        raise LetheError("keep must be a boolean (K, N) mask")
    lacking = np.flatnonzero(((~keep).sum(0) == 0) | ((keep.sum(0) == 0) if need_in else False))
    if lacking.size:
        side = "IN and OUT" if need_in else "OUT"
        raise LetheError(f"record {int(lacking[0])} has no {side} reference model; every record needs at least one "
                         f"on each side ({lacking.size} records lack one)")
    if not (np.isfinite(target).all() and np.isfinite(references).all()):
        raise LetheError("per-record scores must be finite")
    return target, references, keep


def _fit(references: np.ndarray, mask: np.ndarray, pooled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per record, the mean and standard deviation of its scores in the references where `mask` holds.

    The pooled variance is the within-record one (residuals from each record's own mean, with its
    degrees of freedom), not the spread of all scores together, which would add the record-to-record
    differences that the per-record means are there to remove.
    """
    counts = mask.sum(0)
    mean = np.where(mask, references, 0).sum(0) / counts
    squares = np.where(mask, (references - mean) ** 2, 0).sum(0)
    if pooled:
        freedom = (counts - 1).sum()
        if freedom < 1:
            raise LetheError("a pooled variance needs at least one record with two references on a side")
        return mean, np.full_like(mean, np.sqrt(squares.sum() / freedom))
    if (counts < 2).any():
        raise LetheError("a per-record variance needs at least two references per record on each side")
    return mean, np.sqrt(squares / (counts - 1))


def _pooled(keep: np.ndarray, global_variance: bool | None, *, online: bool) -> bool:
    if global_variance is not None:
        return global_variance
    fewest = min(keep.sum(0).min(), (~keep).sum(0).min()) if online else (~keep).sum(0).min()
    return int(fewest) < PER_RECORD_VARIANCE_MIN


@dataclass
class LiraFit:
    """LiRA's per-record Gaussians and the scores they give; `mu_in`/`sigma_in` are None offline."""

    scores: np.ndarray
    mu_out: np.ndarray
    sigma_out: np.ndarray
    mu_in: np.ndarray | None = None
    sigma_in: np.ndarray | None = None
    global_variance: bool = True

    def parameters(self) -> dict[str, list[float]]:
        """Per-record parameters as lists, in record order (what a run saves)."""
        fields = {"mu_in": self.mu_in, "sigma_in": self.sigma_in, "mu_out": self.mu_out, "sigma_out": self.sigma_out}
        return {name: [float(v) for v in values] for name, values in fields.items() if values is not None}


def lira_online_score(target: np.ndarray, mu_in: np.ndarray, sigma_in: np.ndarray, mu_out: np.ndarray,
                      sigma_out: np.ndarray) -> np.ndarray:
    """log N(s; μ_in, σ_in) − log N(s; μ_out, σ_out): the log-likelihood ratio of IN over OUT."""
    return norm.logpdf(target, mu_in, sigma_in) - norm.logpdf(target, mu_out, sigma_out)


def lira_offline_score(target: np.ndarray, mu_out: np.ndarray, sigma_out: np.ndarray) -> np.ndarray:
    """−log P(S ≥ s) under N(μ_out, σ_out): the one-sided test of s lying above the OUT distribution."""
    return -norm.logsf(target, mu_out, sigma_out)


def lira_online_pvalue(target: np.ndarray, mu_in: np.ndarray, sigma_in: np.ndarray, mu_out: np.ndarray,
                       sigma_out: np.ndarray) -> np.ndarray:
    """Per record, P(LR(S) ≥ LR(s)) for S ~ N(μ_out, σ_out): how often a model that never saw the record scores it
    at least as IN-like as the target does, i.e. the record's own false-positive rate at its threshold (a record is
    detected at 1% FPR when this is below 0.01, with no population of non-members needed).

    LR(s) = a·s² + b·s + c with a = (1/σ_out² − 1/σ_in²)/2 and b = μ_in/σ_in² − μ_out/σ_out², symmetric about its
    vertex v = −b/2a: {S : LR(S) ≥ LR(s)} is |S − v| ≥ |s − v| for a > 0 and ≤ for a < 0; for a = 0 (equal
    variances) it is S ≥ s where b > 0 and S ≤ s where b < 0.
    """
    target, mu_in, sigma_in, mu_out, sigma_out = np.broadcast_arrays(
        *(np.asarray(v, np.float64) for v in (target, mu_in, sigma_in, mu_out, sigma_out)))
    a = 0.5 / sigma_out**2 - 0.5 / sigma_in**2
    b = mu_in / sigma_in**2 - mu_out / sigma_out**2
    linear = a == 0
    upper, lower = norm.sf(target, mu_out, sigma_out), norm.cdf(target, mu_out, sigma_out)
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(linear, 0.0, -b / (2 * np.where(linear, 1.0, a)))
        radius = np.abs(target - vertex)
    outside = norm.cdf(vertex - radius, mu_out, sigma_out) + norm.sf(vertex + radius, mu_out, sigma_out)
    quadratic = np.where(a > 0, outside, 1 - outside)
    return np.where(linear, np.where(b >= 0, upper, lower), quadratic)


def model_offsets(population_target: np.ndarray, population_references: np.ndarray,
                  population_keep: np.ndarray) -> tuple[float, np.ndarray]:
    """Each model's mean score on the population records it never trained on: the target's over all of them (they
    are known non-members), reference k's over those keep[k] leaves out.

    LiRA compares a record's score under the target with its scores under the references, so a shift of a whole
    model moves every record's test: a victim fine-tuned on fewer records than its references (250 against 375
    on `tiny`) scores every record about 0.4 nats lower, which online LiRA with 2 + 2 references reads as "OUT"
    for records whose IN and OUT means happen to lie in one order and "IN" in the other (AUC 0.71 where offline
    LiRA reaches 0.91). Subtracting these offsets removes the model-level shift and keeps every per-record one.
    """
    population_target = np.asarray(population_target, np.float64)
    population_references, population_keep = np.asarray(population_references, np.float64), np.asarray(population_keep)
    if population_references.shape != population_keep.shape or population_references.shape[1:] != \
            population_target.shape or not len(population_target):
        raise LetheError(f"population references {population_references.shape} and keep {population_keep.shape} must "
                         f"be (K, P) for the target's {population_target.shape[0]} population records, P > 0")
    unseen = (~population_keep).sum(1)
    if (unseen == 0).any():
        raise LetheError(f"reference model {int(np.argmin(unseen))} trained on every population record: no score of "
                         "its own to align it by; give more calibration records")
    references = np.where(population_keep, 0.0, population_references).sum(1) / unseen
    return float(population_target.mean()), references


def lira_online(target: np.ndarray, references: np.ndarray, keep: np.ndarray, *,
                global_variance: bool | None = None) -> LiraFit:
    """LiRA online: Gaussians of each record's score in the references that saw it and those that did not.

    `global_variance` None pools the variance when any record has fewer than PER_RECORD_VARIANCE_MIN
    references on a side; IN and OUT then share one variance each (pooled over every record).
    """
    target, references, keep = _check(target, references, keep, need_in=True)
    pooled = _pooled(keep, global_variance, online=True)
    mu_in, sigma_in = _fit(references, keep, pooled)
    mu_out, sigma_out = _fit(references, ~keep, pooled)
    return LiraFit(lira_online_score(target, mu_in, sigma_in, mu_out, sigma_out), mu_out, sigma_out, mu_in, sigma_in,
                   pooled)


def lira_offline(target: np.ndarray, references: np.ndarray, keep: np.ndarray, *,
                 global_variance: bool | None = None) -> LiraFit:
    """LiRA offline: only the references that never saw the record (no reference trained per query)."""
    target, references, keep = _check(target, references, keep, need_in=False)
    pooled = _pooled(keep, global_variance, online=False)
    mu_out, sigma_out = _fit(references, ~keep, pooled)
    return LiraFit(lira_offline_score(target, mu_out, sigma_out), mu_out, sigma_out, global_variance=pooled)


@dataclass
class RmiaFit:
    """RMIA's per-record quantities: log Pr(x|θ)/Pr(x) for the records and the population, and the scores."""

    scores: np.ndarray
    log_ratio: np.ndarray  # per target record, log Pr(x|θ) − log Pr(x)
    population_log_ratio: np.ndarray  # per population sample z, log Pr(z|θ) − log Pr(z)

    def parameters(self) -> dict[str, list[float]]:
        return {"log_ratio": [float(v) for v in self.log_ratio]}


def _log_marginal(references: np.ndarray, keep: np.ndarray | None, offline: bool, a: float) -> np.ndarray:
    """log Pr(x): the mean of Pr(x|θ') over references (offline: over OUT ones, then ((1+a)·Pr_out + 1 − a) / 2)."""
    if not offline:
        return logsumexp(references, axis=0) - np.log(len(references))
    out = np.ones_like(references, dtype=bool) if keep is None else ~keep
    log_out = logsumexp(np.where(out, references, -np.inf), axis=0) - np.log(out.sum(0))
    return np.log(((1 + a) * np.exp(log_out) + (1 - a)) / 2)


def rmia(target: np.ndarray, references: np.ndarray, keep: np.ndarray, population_target: np.ndarray,
         population_references: np.ndarray, population_keep: np.ndarray | None = None, *, gamma: float = 1.0,
         a: float = 1.0, offline: bool = False) -> RmiaFit:
    """RMIA: the share of population samples z with LR(x, z) = [Pr(x|θ)/Pr(x)] / [Pr(z|θ)/Pr(z)] ≥ γ.

    Pr(·|θ) is the geometric-mean token probability exp(score). Online, Pr(x) averages all references
    (half of them saw x); offline, only those that did not, linearly corrected by `a` (the paper's
    0.3 was tuned on image classifiers whose probabilities are near 1; for sequence probabilities
    near e^-3 the correction must leave Pr_out nearly unchanged, so `a` ≈ 1). The population samples
    are the same kind of records, none of them a target record; `population_keep` says which
    references saw each (None: none did). The score counts population samples, so it ties once x
    beats them all: with fewer than about 1,000 samples its TPR at 1% FPR means little.
    """
    if gamma <= 0:
        raise LetheError(f"RMIA's gamma must be positive, not {gamma}")
    if not 0 < a <= 1:
        raise LetheError(f"RMIA's offline a must be in (0, 1], not {a}")
    target, references, keep = _check(target, references, keep, need_in=not offline)
    population_target = np.asarray(population_target, np.float64)
    population_references = np.asarray(population_references, np.float64)
    if population_references.shape != (len(references), len(population_target)) or not len(population_target):
        raise LetheError(f"population references {population_references.shape} must be (K={len(references)}, "
                         f"P={len(population_target)}) with P > 0")
    if population_keep is not None and np.asarray(population_keep).shape != population_references.shape:
        raise LetheError("population_keep must have the population references' shape")
    log_ratio = target - _log_marginal(references, keep, offline, a)
    population_log_ratio = population_target - _log_marginal(population_references, population_keep, offline, a)
    # LR(x, z) ≥ γ  ⇔  log_ratio(x) − log_ratio(z) ≥ log γ: count with a sort, not an (N, P) matrix
    threshold = np.sort(population_log_ratio)
    below = np.searchsorted(threshold, log_ratio - np.log(gamma), side="right")
    return RmiaFit(below / len(threshold), log_ratio, population_log_ratio)
