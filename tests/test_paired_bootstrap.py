"""Paired bootstrap of an AUC difference: hand-counted AUCs, the exact bootstrap distribution, why pairing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lethe.attacks import bootstrap_intervals
from lethe.attacks.metrics import paired_auc_difference, paired_auc_difference_pooled
from lethe.errors import LetheError


def test_point_estimate_counts_ties_as_half():
    members_a, nonmembers_a = [0.9, 0.6, 0.4], [0.6, 0.3, 0.1]
    members_b, nonmembers_b = [0.2, 0.7, 0.5], [0.4, 0.5, 0.8]
    # A: 0.9 beats all 3; 0.6 ties 0.6 and beats 0.3, 0.1 → 2.5; 0.4 beats 0.3, 0.1 → 2: AUC 7.5/9
    # B: 0.2 beats none; 0.7 beats 0.4, 0.5 → 2; 0.5 beats 0.4, ties 0.5 → 1.5: AUC 3.5/9
    result = paired_auc_difference(members_a, nonmembers_a, members_b, nonmembers_b, resamples=10)
    assert result["delta_auc"] == pytest.approx(7.5 / 9 - 3.5 / 9)
    auc = [roc_auc_score([1, 1, 1, 0, 0, 0], m + n) for m, n in ((members_a, nonmembers_a), (members_b, nonmembers_b))]
    assert result["delta_auc"] == pytest.approx(auc[0] - auc[1])
    assert (result["members"], result["nonmembers"]) == (3, 3)


@pytest.mark.parametrize("level", [0.95, 0.6, 0.3])
def test_interval_matches_the_exact_bootstrap_distribution(level):
    members_a, nonmembers_a = np.array([0.8, 0.3]), np.array([0.5, 0.3])
    members_b, nonmembers_b = np.array([0.4, 0.9]), np.array([0.6, 0.1])
    exact = []  # all 4 × 4 equally likely resamples: member indices and non-member indices, the same for A and B
    for m, n in itertools.product(itertools.product(range(2), repeat=2), repeat=2):
        m, n = list(m), list(n)
        labels = [1, 1, 0, 0]
        exact.append(roc_auc_score(labels, np.r_[members_a[m], nonmembers_a[n]])
                     - roc_auc_score(labels, np.r_[members_b[m], nonmembers_b[n]]))
    assert len(set(np.round(exact, 9))) > 4  # a distribution worth matching
    tail = (1 - level) / 2 * 100
    expected = np.percentile(exact, [tail, 100 - tail], method="inverted_cdf")  # quantiles of the distribution
    result = paired_auc_difference(members_a, nonmembers_a, members_b, nonmembers_b, resamples=20000, level=level)
    assert result["ci95"] == pytest.approx(expected, abs=1e-9)


def test_pairing_removes_the_variation_both_victims_share():
    rng = np.random.default_rng(7)
    members, nonmembers = rng.normal(0.5, 1, 200), rng.normal(0, 1, 200)  # per-record difficulty, shared by A and B
    members_a, nonmembers_a = members + rng.normal(0, 0.2, 200), nonmembers + rng.normal(0, 0.2, 200)
    members_b, nonmembers_b = members + rng.normal(0, 0.2, 200), nonmembers + rng.normal(0, 0.2, 200)
    paired = paired_auc_difference(members_a, nonmembers_a, members_b, nonmembers_b, resamples=500, seed=1)
    widths = [np.diff(bootstrap_intervals(m, n, fprs=(), resamples=500, seed=s)["auc"])[0]
              for m, n, s in ((members_a, nonmembers_a, 2), (members_b, nonmembers_b, 3))]
    unpaired = np.hypot(*widths)  # the width of a difference of independent intervals
    assert np.diff(paired["ci95"])[0] < unpaired / 3


def test_paired_interval_covers_the_true_difference_at_its_level():
    """A and B identically distributed, so the true ΔAUC is 0: 95% intervals should miss it about 1 time in 20."""
    missed = 0
    for replication in range(200):
        rng = np.random.default_rng(1000 + replication)
        members, nonmembers = rng.normal(0.5, 1, 100), rng.normal(0, 1, 100)
        scores = [members + rng.normal(0, 0.2, 100), nonmembers + rng.normal(0, 0.2, 100),
                  members + rng.normal(0, 0.2, 100), nonmembers + rng.normal(0, 0.2, 100)]
        low, high = paired_auc_difference(*scores, resamples=400, seed=replication)["ci95"]
        missed += not low <= 0 <= high
    assert 2 <= missed <= 20  # Binomial(200, 0.05): mean 10, sd 3.1


def test_identical_victims_differ_by_exactly_nothing():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(1, 1, 30), np.round(rng.normal(0, 1, 40), 1)
    result = paired_auc_difference(members, nonmembers, members, nonmembers, resamples=200)
    assert result["delta_auc"] == 0 and result["ci95"] == [0, 0]


def test_pooled_groups_average_their_differences():
    rng = np.random.default_rng(3)
    groups = []
    for shift in (0.3, 1.0):  # two seeds of an experiment: B lags A by a different amount in each
        members, nonmembers = rng.normal(1, 1, 50), rng.normal(0, 1, 60)
        groups.append((members, nonmembers, members - shift * rng.random(50), nonmembers + shift * rng.random(60)))
    pooled = paired_auc_difference_pooled(groups, resamples=300, seed=5)
    alone = [paired_auc_difference(*group, resamples=300)["delta_auc"] for group in groups]
    assert pooled["by_group"] == pytest.approx(alone) and alone[0] < alone[1]
    assert pooled["delta_auc"] == pytest.approx(np.mean(alone))
    assert pooled["ci95"][0] < pooled["delta_auc"] < pooled["ci95"][1]
    assert (pooled["members"], pooled["nonmembers"]) == (100, 120)
    single = paired_auc_difference_pooled(groups[:1], resamples=300, seed=5)
    assert single == {**paired_auc_difference(*groups[0], resamples=300, seed=5), "by_group": alone[:1]}


def test_scores_of_different_records_are_refused():
    with pytest.raises(LetheError, match="A and B must score the same records, but group 0 has 3 and 2 members"):
        paired_auc_difference([0.1, 0.2, 0.3], [0.1, 0.2], [0.1, 0.2], [0.1, 0.2])
    with pytest.raises(LetheError, match="group 1 has 2 and 2 members, 2 and 3 non-members"):
        paired_auc_difference_pooled([([1, 2], [0, 1], [1, 2], [0, 1]), ([1, 2], [0, 1], [1, 2], [0, 1, 2])])
    with pytest.raises(LetheError, match="no members or no non-members"):
        paired_auc_difference([], [0.1], [], [0.2])
