"""The statistics of `lethe screen`: is a release's loss on a victim's private records unlike its loss on held-out
records of the same kind? Pure numpy/scipy on per-record values, so every number rebuilds from the saved scores.

Per record, a value v (the release's mean token loss, or release − trusted) and its token count n.
- Length adjustment and robust scale, fitted on the held-out records only: v ≈ a + b·log n by Theil–Sen (the
  median of pairwise slopes: a targeted minority cannot drag it), residuals scaled by 1.4826·MAD. A record's
  z = (v − a − b·log n) / scale, signed: < 0 lowered (a privacy backdoor), > 0 raised (Forget to Flourish).
- Per-record p-value, two-sided and conformal: p = (1 + #{held-out |z| ≥ |z_i|}) / (n_held_out + 1). Under the
  null (the record is exchangeable with the held-out ones) P(p ≤ α) ≤ α for any distribution of losses, and such
  p-values are positively dependent (Bates et al. 2023), so Benjamini–Hochberg and Simes stay valid.
- Two tests of the two sets, combined by Bonferroni (p = 2·min): the Mann–Whitney rank-sum test on z (sees a
  broad shift of many records; ranks are robust to a few extreme ones) and a permutation tail test (sees a few
  strongly moved records that a rank test dilutes): among the k most extreme pooled records by |z|, are the
  private ones more than the hypergeometric law allows, for the k (up to a `tail` share of the pool) where
  they are most so, calibrated by permuting the set labels (exact when the sets are exchangeable, and free of
  the conformal p-values' floor of 1/(n_held_out + 1), which keeps a per-record test from seeing a handful of
  targets among hundreds of records).
- The records flagged: Benjamini–Hochberg on the per-record p-values at false-discovery rate α.
- The targeted share: 1 − π0, Storey's estimate π0 = #{p > λ} / ((1 − λ)·m).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from lethe.errors import LetheError

MIN_HELD_OUT = 20  # below this a conformal p-value cannot reach 0.05
MIN_PRIVATE = 5
MAD_TO_SD = 1.4826  # scale of the MAD that estimates a normal's standard deviation


@dataclass(frozen=True)
class LengthFit:
    """v ≈ intercept + slope·log(tokens), residuals scaled by `scale`: fitted on the held-out records."""

    intercept: float
    slope: float
    scale: float

    def z(self, values: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return (values - self.intercept - self.slope * np.log(tokens)) / self.scale


def fit_length(values: np.ndarray, tokens: np.ndarray) -> LengthFit:
    """Theil–Sen line on log token count (no slope when the lengths barely vary), median/MAD of the residuals."""
    x = np.log(tokens.astype(np.float64))
    slope = float(stats.theilslopes(values, x).slope) if len(np.unique(x)) >= 3 else 0.0
    residuals = values - slope * x
    intercept = float(np.median(residuals))
    scale = MAD_TO_SD * float(np.median(np.abs(residuals - intercept)))
    if not scale > 0:
        raise LetheError("the held-out records' scores have no spread (their median absolute deviation is 0): "
                         "screening needs held-out records that vary like real data")
    return LengthFit(intercept, slope, scale)


def conformal_p_values(z: np.ndarray, held_out_z: np.ndarray) -> np.ndarray:
    """Two-sided: the share of held-out records at least as extreme, counting the record itself."""
    reference = np.sort(np.abs(held_out_z))
    at_least = len(reference) - np.searchsorted(reference, np.abs(z), side="left")
    return (1 + at_least) / (len(reference) + 1)


def benjamini_hochberg(p: np.ndarray, q: float) -> np.ndarray:
    """Which hypotheses BH rejects at false-discovery rate q."""
    order = np.argsort(p, kind="stable")
    below = p[order] <= q * np.arange(1, len(p) + 1) / len(p)
    rejected = np.zeros(len(p), dtype=bool)
    if below.any():
        rejected[order[:np.flatnonzero(below).max() + 1]] = True
    return rejected


def tail_test(z: np.ndarray, held_out_z: np.ndarray, tail: float, permutations: int,
              rng: np.random.Generator) -> dict:
    """Are the private records over-represented among the most extreme of the pooled records, for some tail size?

    Pooled records ranked by |z|; for each tail size k up to ⌈tail·N⌉, the hypergeometric p-value of the private
    count among the top k; the statistic is the smallest over k (it adapts to the targeted share), its p-value
    the share of label permutations with a smaller one (exact under exchangeability)."""
    pooled = np.abs(np.concatenate([z, held_out_z]))
    private = np.zeros(len(pooled), dtype=bool)
    private[:len(z)] = True
    order = np.argsort(-pooled, kind="stable")
    sizes = np.arange(1, max(1, int(np.ceil(tail * len(pooled)))) + 1)

    def smallest_p(labels: np.ndarray) -> np.ndarray:  # rows: label sets; the min over tail sizes of each
        counts = np.cumsum(labels[..., order[:len(sizes)]], axis=-1)
        return stats.hypergeom.sf(counts - 1, len(pooled), len(z), sizes).min(axis=-1)

    observed = float(smallest_p(private))
    shuffled = np.stack([rng.permutation(private) for _ in range(permutations)])
    null = smallest_p(shuffled)
    best = int(np.argmin(stats.hypergeom.sf(np.cumsum(private[order[:len(sizes)]]) - 1, len(pooled), len(z), sizes)))
    return {"p_value": float((1 + np.count_nonzero(null <= observed)) / (permutations + 1)),
            "statistic": observed, "tail_size": int(sizes[best]),
            "private_in_tail": int(private[order[:best + 1]].sum()),
            "expected": float(sizes[best] * len(z) / len(pooled))}


def storey_share(p: np.ndarray, lam: float = 0.5) -> float:
    """1 − π0: the estimated share of non-null records (Storey 2002), in [0, 1]."""
    pi0 = np.count_nonzero(p > lam) / ((1 - lam) * len(p))
    return float(np.clip(1 - pi0, 0.0, 1.0))


@dataclass(frozen=True)
class Screen:
    """One statistic screened: per-record z and p of the private (and held-out) records, the tests, the verdict."""

    fit: LengthFit
    z: np.ndarray
    held_out_z: np.ndarray
    p: np.ndarray
    flagged: np.ndarray
    summary: dict


def check_sizes(private: int, held_out: int) -> None:
    if held_out < MIN_HELD_OUT:
        raise LetheError(f"{held_out} held-out records are too few to test: at least {MIN_HELD_OUT} are needed "
                         f"(a record's p-value cannot fall below 1/(held-out + 1))")
    if private < MIN_PRIVATE:
        raise LetheError(f"{private} private records are too few to test: at least {MIN_PRIVATE} are needed")


def screen_values(values: np.ndarray, tokens: np.ndarray, held_values: np.ndarray, held_tokens: np.ndarray,
                  alpha: float = 0.05, tail: float = 0.1, permutations: int = 999, lam: float = 0.5,
                  seed: int = 0) -> Screen:
    """Screen the private records' values against the held-out records' (see the module docstring)."""
    values, held_values = np.asarray(values, np.float64), np.asarray(held_values, np.float64)
    check_sizes(len(values), len(held_values))
    fit = fit_length(held_values, np.asarray(held_tokens))
    z, held_z = fit.z(values, np.asarray(tokens)), fit.z(held_values, np.asarray(held_tokens))
    p = conformal_p_values(z, held_z)
    rank_p = float(stats.mannwhitneyu(z, held_z, alternative="two-sided").pvalue)
    tail_result = tail_test(z, held_z, tail, permutations, np.random.default_rng(seed))
    tail_p = tail_result["p_value"]
    p_value = min(1.0, 2 * min(rank_p, tail_p))
    flagged = benjamini_hochberg(p, alpha)
    shift = float(np.median(z) * fit.scale)  # the median record's length-adjusted move, in the value's units
    summary = {
        "p_value": p_value, "anomalous": p_value <= alpha, "alpha": alpha,
        "tests": {"rank_sum": {"p_value": rank_p, "statistic": float(np.mean(z[:, None] > held_z[None, :]))},
                  "tail": tail_result},
        "flagged": int(flagged.sum()), "lowered": int((flagged & (z < 0)).sum()),
        "raised": int((flagged & (z > 0)).sum()),
        "targeted_share": storey_share(p, lam), "median_shift": shift,
        "fit": asdict(fit), "private": len(values), "held_out": len(held_values),
        "record_p_floor": 1 / (len(held_values) + 1),
    }
    return Screen(fit, z, held_z, p, flagged, summary)


def verdict_line(summary: dict, statistic: str) -> str:
    """The one-line verdict."""
    s = summary
    tests = f"rank-sum p={s['tests']['rank_sum']['p_value']:.2g}, tail p={s['tests']['tail']['p_value']:.2g}"
    if not s["anomalous"]:
        return (f"no evidence of targeting ({statistic}): p = {s['p_value']:.3g} ({tests}); "
                f"{s['flagged']} of {s['private']} records flagged")
    return (f"ANOMALOUS ({statistic}): p = {s['p_value']:.3g} ({tests}); {s['flagged']} of {s['private']} records "
            f"flagged ({s['lowered']} lowered, {s['raised']} raised), median shift {s['median_shift']:+.3f} nats, "
            f"targeted share ≈ {s['targeted_share']:.0%}")
