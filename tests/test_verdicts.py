"""The verdict rules of lethe.verdicts, each word at the edges of its rule."""

import pytest

from lethe import verdicts


def test_blind_split_is_separable_on_either_side_of_its_null():
    assert verdicts.blind_split({"auc": 0.55, "ci95": [0.4, 0.6]})["word"] == "not separable"
    above = verdicts.blind_split({"auc": 0.71, "ci95": [0.4, 0.6]})
    assert above["word"] == "separable" and "no evidence" in above["line"]
    below = verdicts.blind_split({"auc": 0.31, "ci95": [0.4, 0.6]})
    assert below["word"] == "separable" and "below its null" in below["line"]


def test_memory_needs_the_interval_above_chance():
    assert verdicts.remembers({"auc": 0.8, "ci95": [0.62, 0.93]})["word"] == "remembers"
    assert verdicts.remembers({"auc": 0.6, "ci95": [0.45, 0.75]})["word"] == "not shown"


@pytest.mark.parametrize(("ratio", "ci", "word"), [
    (1.49, [-0.1, 0.1], "looks like the retrain"),
    (1.51, [-0.1, 0.1], "overshoots"),          # forget perplexity past 1.5x the retrain's
    (1.0, [-0.3, -0.01], "overshoots"),         # the forget set stands out the other way
    (0.6, [-0.1, 0.1], "still remembers"),      # under 1 / 1.5
    (1.0, [0.02, 0.3], "still remembers"),      # still separable the members' way
    (0.67, [-0.1, 0.1], "looks like the retrain"),
])
def test_unlearning_lands_by_ratio_and_paired_interval(ratio, ci, word):
    found = verdicts.unlearning_lands({"forget_ppl_ratio": ratio, "mia_auc": sum(ci) / 2, "mia_auc_ci95": ci}, 0.55)
    assert found["word"] == word
    assert found["numbers"]["forget_ppl_ratio"] == ratio and found["numbers"]["ci95"] == ci


def comparison(*intervals):
    return {f"attack{i}": {"delta_auc": sum(ci) / 2, "ci95": list(ci)} for i, ci in enumerate(intervals)}


def test_the_control_is_seen_in_its_strongest_attack_and_gates_every_leakage_claim():
    comparisons = {"backdoor": {"full": comparison((-0.05, 0.05), (0.03, 0.2))},
                   "ftf": {"full": comparison((-0.04, 0.06), (-0.1, 0.02))},
                   "loud": {"full": comparison((0.01, 0.09))}}
    control = verdicts.control_seen(comparisons, "backdoor")
    assert control["word"] == "seen" and control["numbers"]["attack"] == "attack1"
    assert verdicts.leakage_raised(comparisons, "ftf", control)["word"] == "does not raise"
    assert verdicts.leakage_raised(comparisons, "loud", control)["word"] == "raises"
    blind_harness = verdicts.control_seen({"backdoor": {"full": comparison((-0.05, 0.05))}}, "backdoor")
    assert blind_harness["word"] == "not seen"
    assert verdicts.leakage_raised(comparisons, "loud", blind_harness)["word"] == "no claim"
    absent = verdicts.control_seen(comparisons, None)
    assert absent["word"] == "absent" and verdicts.leakage_raised(comparisons, "loud", absent)["word"] == "no claim"
