"""LiRA and RMIA on arrays: hand-computed scores from the saved parameters, and why per-record calibration wins."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lethe.attacks.metrics import tpr_at_fpr
from lethe.attacks.per_example import (
    balanced_keep,
    lira_offline,
    lira_offline_score,
    lira_online,
    lira_online_score,
    model_offsets,
    rmia,
)
from lethe.errors import LetheError


def _log_normal(x: float, mu: float, sigma: float) -> float:
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def test_balanced_keep_puts_every_record_in_exactly_half_the_references():
    keep = balanced_keep(8, 300, seed=3)
    assert keep.shape == (8, 300) and (keep.sum(0) == 4).all()
    assert 0.4 < keep.sum(1).min() / 300 and keep.sum(1).max() / 300 < 0.6  # each reference sees about half
    assert not np.array_equal(keep, balanced_keep(8, 300, seed=4))
    with pytest.raises(LetheError, match="even number"):
        balanced_keep(3, 10, seed=0)


# 4 references, 3 records; each record in two of them
REFERENCES = np.array([[-2.0, -3.5, -1.0],
                       [-2.6, -3.0, -1.4],
                       [-1.8, -3.9, -0.8],
                       [-2.9, -3.1, -1.2]])
KEEP = np.array([[True, False, True],
                 [False, True, False],
                 [True, False, False],
                 [False, True, True]])
TARGET = np.array([-1.7, -3.2, -1.3])


def test_online_score_is_the_hand_computed_gaussian_ratio_from_saved_parameters(tmp_path):
    fit = lira_online(TARGET, REFERENCES, KEEP)  # 2 references a side: the pooled variance
    assert fit.global_variance
    # record 0: IN {-2.0, -1.8}, OUT {-2.6, -2.9}; record 1: IN {-3.0, -3.1}, OUT {-3.5, -3.9};
    # record 2: IN {-1.0, -1.2}, OUT {-1.4, -0.8}
    mu_in, mu_out = [-1.9, -3.05, -1.1], [-2.75, -3.7, -1.1]
    # pooled within-record variance, one degree of freedom per record and side
    sigma_in = math.sqrt((0.1 ** 2 * 2 + 0.05 ** 2 * 2 + 0.1 ** 2 * 2) / 3)
    sigma_out = math.sqrt((0.15 ** 2 * 2 + 0.2 ** 2 * 2 + 0.3 ** 2 * 2) / 3)
    saved = json.loads(json.dumps(fit.parameters()))
    (tmp_path / "lira.json").write_text(json.dumps(saved))
    loaded = json.loads((tmp_path / "lira.json").read_text())
    assert loaded["mu_in"] == pytest.approx(mu_in) and loaded["mu_out"] == pytest.approx(mu_out)
    assert loaded["sigma_in"] == pytest.approx([sigma_in] * 3) and loaded["sigma_out"] == pytest.approx([sigma_out] * 3)
    by_hand = [_log_normal(s, loaded["mu_in"][i], loaded["sigma_in"][i])
               - _log_normal(s, loaded["mu_out"][i], loaded["sigma_out"][i]) for i, s in enumerate(TARGET)]
    assert fit.scores == pytest.approx(by_hand)
    rebuilt = lira_online_score(TARGET, *(np.array(loaded[k]) for k in ("mu_in", "sigma_in", "mu_out", "sigma_out")))
    assert rebuilt == pytest.approx(fit.scores)
    # records 0 and 1 sit nearer their IN means; record 2's means coincide and the wider OUT Gaussian fits better
    assert fit.scores[0] > fit.scores[1] > 0 > fit.scores[2]


def test_per_record_variance_when_asked():
    fit = lira_online(TARGET, REFERENCES, KEEP, global_variance=False)
    assert not fit.global_variance
    assert fit.sigma_in == pytest.approx([np.std([-2.0, -1.8], ddof=1), np.std([-3.0, -3.1], ddof=1),
                                          np.std([-1.0, -1.2], ddof=1)])


def test_offline_score_is_the_one_sided_tail_of_the_out_gaussian():
    fit = lira_offline(TARGET, REFERENCES, KEEP)
    assert fit.mu_in is None and set(fit.parameters()) == {"mu_out", "sigma_out"}
    for i, s in enumerate(TARGET):
        z = (s - fit.mu_out[i]) / fit.sigma_out[i]
        tail = 0.5 * math.erfc(z / math.sqrt(2))  # P(S ≥ s)
        assert fit.scores[i] == pytest.approx(-math.log(tail))
    assert lira_offline_score(TARGET, fit.mu_out, fit.sigma_out) == pytest.approx(fit.scores)


def _synthetic(references: int, records: int, seed: int, shift: float = 0.3):
    """Records of very different difficulty (spread 1) that training lifts by `shift` (noise 0.1)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(-3, 1, records)
    keep = balanced_keep(references, records, seed)
    reference_scores = difficulty + shift * keep + rng.normal(0, 0.1, (references, records))
    member = np.arange(records) < records // 2
    target = difficulty + shift * member + rng.normal(0, 0.1, records)
    return target, reference_scores, keep, member, rng


def test_lira_beats_a_global_threshold_at_low_fpr():
    target, references, keep, member, _ = _synthetic(16, 2000, seed=0)
    loss = tpr_at_fpr(member, target, 0.01)  # one threshold for every record
    online = tpr_at_fpr(member, lira_online(target, references, keep).scores, 0.01)
    offline = tpr_at_fpr(member, lira_offline(target, references, keep).scores, 0.01)
    assert loss < 0.1
    assert online > 0.5 and offline > 0.5
    assert online > loss + 0.4


def test_rmia_counts_population_samples_below_the_likelihood_ratio():
    references = np.log(np.array([[0.10, 0.20], [0.30, 0.20]]))  # 2 references, 2 records
    keep = np.array([[True, False], [False, True]])
    target = np.log(np.array([0.40, 0.10]))
    population_references = np.log(np.array([[0.1, 0.2, 0.4], [0.1, 0.2, 0.2]]))
    population_target = np.log(np.array([0.1, 0.3, 0.3]))
    fit = rmia(target, references, keep, population_target, population_references, gamma=1.0)
    # online Pr(x): record 0 (0.1 + 0.3)/2 = 0.2 → ratio 2; record 1 0.2 → ratio 0.5
    # population ratios: 0.1/0.1 = 1, 0.3/0.2 = 1.5, 0.3/0.3 = 1
    assert np.exp(fit.log_ratio) == pytest.approx([2.0, 0.5])
    assert np.exp(fit.population_log_ratio) == pytest.approx([1.0, 1.5, 1.0])
    assert fit.scores == pytest.approx([1.0, 0.0])
    # γ = 1.5: LR(x0, z) = 2, 4/3, 2 → two of three at least 1.5
    assert rmia(target, references, keep, population_target, population_references, gamma=1.5).scores[0] == \
        pytest.approx(2 / 3)
    # offline with a = 1: Pr(x) is the OUT reference's probability alone: record 0 → 0.3, record 1 → 0.2
    offline = rmia(target, references, keep, population_target, population_references, offline=True, a=1.0)
    assert np.exp(offline.log_ratio) == pytest.approx([0.4 / 0.3, 0.5])
    # a = 0.5: Pr(x) = (1.5 · 0.3 + 0.5) / 2
    assert np.exp(rmia(target, references, keep, population_target, population_references, offline=True,
                       a=0.5).log_ratio[0]) == pytest.approx(0.4 / 0.475)


def test_rmia_beats_a_global_threshold_in_auc_and_at_low_fpr():
    target, references, keep, member, rng = _synthetic(8, 2000, seed=1)
    population_difficulty = rng.normal(-3, 1, 2000)  # never trained on by anyone
    population_target = population_difficulty + rng.normal(0, 0.1, 2000)
    population_references = population_difficulty + rng.normal(0, 0.1, (8, 2000))
    scores = rmia(target, references, keep, population_target, population_references).scores
    assert tpr_at_fpr(member, scores, 0.01) > tpr_at_fpr(member, target, 0.01) + 0.3


def test_bad_inputs_are_refused_in_one_line():
    with pytest.raises(LetheError, match="no IN and OUT reference"):
        lira_online(TARGET, REFERENCES, np.ones_like(KEEP))
    with pytest.raises(LetheError, match="must be"):
        lira_online(TARGET[:2], REFERENCES, KEEP)
    with pytest.raises(LetheError, match="boolean"):
        lira_online(TARGET, REFERENCES, KEEP.astype(int))
    with pytest.raises(LetheError, match="finite"):
        lira_offline(np.array([np.nan, 0, 0]), REFERENCES, KEEP)
    with pytest.raises(LetheError, match="gamma"):
        rmia(TARGET, REFERENCES, KEEP, TARGET, REFERENCES, gamma=0)
    with pytest.raises(LetheError, match="population references"):
        rmia(TARGET, REFERENCES, KEEP, TARGET[:2], REFERENCES)


def test_paired_tpr_difference_is_the_difference_of_tprs_and_zero_for_the_same_scores():
    from lethe.attacks.metrics import paired_tpr_difference_pooled

    target, references, keep, member, _ = _synthetic(8, 400, seed=2)
    lira = lira_online(target, references, keep).scores
    group = (lira[member], lira[~member], target[member], target[~member])
    result = paired_tpr_difference_pooled([group], 0.01, resamples=200)
    expected = tpr_at_fpr(member, lira, 0.01) - tpr_at_fpr(member, target, 0.01)
    assert result["delta"] == pytest.approx(expected) and expected > 0.2
    assert result["ci95"][0] > 0  # LiRA's gain at 1% FPR holds under resampling of the same records
    same = paired_tpr_difference_pooled([(target[member], target[~member]) * 2], 0.01, resamples=50)
    assert same["delta"] == 0 and same["ci95"] == [0.0, 0.0]


def test_a_shift_of_a_whole_model_leaves_lira_unchanged_once_aligned():
    """A victim that trained for fewer steps than its references scores every record lower. Aligned by each model's
    mean on population records it never saw, online and offline LiRA give the same scores as without the shift;
    unaligned, online LiRA with two references a side loses most of its power."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    references_count, records, population = 4, 400, 300
    keep = balanced_keep(references_count, records, seed=1)
    effect = rng.uniform(0.05, 0.4, records)  # how much training on a record raises its score
    base = rng.normal(-3.0, 0.5, records)
    references = base + keep * effect + rng.normal(0, 0.05, (references_count, records))
    member = rng.random(records) < 0.5
    target = base + member * effect + rng.normal(0, 0.05, records)
    population_base = rng.normal(-3.0, 0.5, population)
    population_keep = balanced_keep(references_count, population, seed=2)
    noise = rng.normal(0, 0.05, (references_count, population))
    population_references = population_base + population_keep * 0.2 + noise
    population_target = population_base + rng.normal(0, 0.05, population)  # never in the target's data
    reference_shift = np.array([0.1, -0.05, 0.2, 0.0])[:, None]

    def aligned(shift):
        offset, offsets = model_offsets(population_target + shift, population_references + reference_shift,
                                        population_keep)
        # by hand: the target's mean over every population record, each reference's over those it left out
        assert offset == pytest.approx(np.mean(population_target + shift))
        assert offsets[2] == pytest.approx((population_references + reference_shift)[2][~population_keep[2]].mean())
        return target + shift - offset, references + reference_shift - offsets[:, None]

    for fit in (lira_online, lira_offline):
        assert fit(*aligned(-0.4), keep).scores == pytest.approx(fit(*aligned(0.0), keep).scores)
    shifted_auc = roc_auc_score(member, lira_online(target - 0.4, references + reference_shift, keep).scores)
    aligned_auc = roc_auc_score(member, lira_online(*aligned(-0.4), keep).scores)
    assert aligned_auc > 0.9 and aligned_auc - shifted_auc > 0.1
    with pytest.raises(LetheError, match="trained on every population record"):
        model_offsets(population_target, population_references, np.ones_like(population_keep))
