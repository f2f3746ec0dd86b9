"""Extraction of one release against another, secret by secret.

Both victims are prompted with the same member prefixes, so each secret gives a pair (extracted from
A's victim, extracted from B's victim). McNemar's exact test reads only the discordant pairs: under
"no difference" a secret extracted by one victim alone is as likely A's as B's, so the count of
A-only secrets is Binomial(discordant, 1/2) and the two-sided p-value is twice its smaller tail. ΔNSR
(the share of secrets B extracts minus A's) gets a paired bootstrap interval: each resample draws
secrets, within each seed, and uses the same draws for both victims. Exposure, where the secret has a
digit format, is compared the same way beside it: as sampled (`exposure`, capped at log2(M+1) for M
candidates, where a memorised secret saturates) and extrapolated by the skew-normal fit
(`exposure_skewnorm`, uncapped).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lethe.errors import LetheError

EXPOSURES = ("exposure", "exposure_skewnorm")  # as sampled (capped), and the skew-normal extrapolation


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none): scipy's exact binomial
    test of the A-only count against Binomial(discordant, 1/2)."""
    from scipy.stats import binomtest

    discordant = only_a + only_b
    return float(binomtest(only_a, discordant, 0.5).pvalue) if discordant else 1.0


def secret_rows(extract_dir: Path) -> dict[str, dict]:
    """Per secret of a `lethe attack extract` run: extracted exactly (any strategy) and its exposures (or None)."""
    rows = {}
    for line in (extract_dir / "generations.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows[row["id"]] = {"hit": bool(row["exact"]), **{key: (row["exposure"] or {}).get(key) for key in EXPOSURES}}
    return rows


def _paired_interval(groups: list[tuple[np.ndarray, np.ndarray]], resamples: int, seed: int) -> list[float]:
    """95% percentile interval of mean(b) − mean(a), secrets resampled within each group, the same draws for both."""
    rng = np.random.default_rng(seed)
    total = sum(len(a) for a, _ in groups)
    pooled = np.zeros(resamples)
    for a, b in groups:
        draws = rng.integers(0, len(a), (resamples, len(a)))
        pooled += (b[draws] - a[draws]).sum(1)
    low, high = np.percentile(pooled / total, [2.5, 97.5])
    return [float(low), float(high)]


def compare_extraction(pairs: list[tuple[dict[str, dict], dict[str, dict]]], *, resamples: int = 1000,
                       seed: int = 0) -> dict:
    """Release B against release A over groups (seeds) of the same secrets: `pairs` holds (A's rows, B's rows)
    per group, as secret_rows reads them."""
    if not pairs:
        raise LetheError("an extraction comparison needs at least one group of secrets")
    hits, exposures = [], {key: [] for key in EXPOSURES}
    for index, (a, b) in enumerate(pairs):
        if a.keys() != b.keys() or not a:
            raise LetheError(f"group {index}: the two victims were prompted with different secrets (or none); "
                             "an extraction comparison pairs the same secrets")
        ids = sorted(a)
        hits.append((np.array([a[i]["hit"] for i in ids], float), np.array([b[i]["hit"] for i in ids], float)))
        for key, groups in exposures.items():
            scored = [i for i in ids if a[i].get(key) is not None and b[i].get(key) is not None]
            if scored:
                groups.append((np.array([a[i][key] for i in scored]), np.array([b[i][key] for i in scored])))
    hit_a, hit_b = (np.concatenate(side) for side in zip(*hits, strict=True))
    only_a, only_b = int(((hit_a == 1) & (hit_b == 0)).sum()), int(((hit_a == 0) & (hit_b == 1)).sum())
    result = {"secrets": len(hit_a), "nsr": {"a": int(hit_a.sum()), "b": int(hit_b.sum())},
              "delta_nsr": float(hit_b.mean() - hit_a.mean()), "ci95": _paired_interval(hits, resamples, seed),
              "mcnemar": {"only_a": only_a, "only_b": only_b, "p_value": mcnemar_exact(only_a, only_b)}}
    for key, groups in exposures.items():
        if groups:
            exp_a, exp_b = (np.concatenate(side) for side in zip(*groups, strict=True))
            result[key] = {"secrets": len(exp_a), "a": float(exp_a.mean()), "b": float(exp_b.mean()),
                           "delta": float(exp_b.mean() - exp_a.mean()),
                           "ci95": _paired_interval(groups, resamples, seed)}
    return result
