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


def test_the_unlearning_verdict_shows_the_forget_ratio_interval_where_saved():
    distance = {"forget_ppl_ratio": 0.94, "forget_ppl_ratio_ci95": [0.81, 1.12], "mia_auc": 0.05,
                "mia_auc_ci95": [-0.1, 0.2]}
    found = verdicts.unlearning_lands(distance, 0.55)
    assert "0.94× the exact retrain's (95% interval 0.81–1.12, documents resampled)" in found["line"]
    assert found["numbers"]["forget_ppl_ratio_ci95"] == [0.81, 1.12]
    older = verdicts.unlearning_lands({k: v for k, v in distance.items() if k != "forget_ppl_ratio_ci95"}, 0.55)
    assert "documents resampled" not in older["line"] and older["word"] == found["word"]


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


def test_a_screened_release_is_flagged_on_any_seed_and_unscreened_when_every_seed_was_skipped():
    tested = {0: {"anomalous": False, "p_value": 0.41}, 1: {"anomalous": True, "p_value": 0.003}}
    flagged = verdicts.screened("backdoor", tested)
    assert flagged["word"] == "flagged" and flagged["numbers"]["flagged_seeds"] == [1]
    assert "p = 0.41, p = 0.003" in flagged["line"]
    clean = verdicts.screened("benign", {0: {"anomalous": False, "p_value": 0.41}})
    assert clean["word"] == "not flagged"
    skipped = verdicts.screened("benign", {0: {"skipped": "12 private and 12 held-out records: too few"}})
    assert skipped["word"] == "not screened" and "too few" in skipped["line"]
    # a seed too small to test counts as neither
    assert verdicts.screened("benign", {0: {"skipped": "too few"}, 1: {"anomalous": False, "p_value": 0.5}})[
        "word"] == "not flagged"
