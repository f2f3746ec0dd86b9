"""What a run showed, one claim a line: each verdict a word backed by the numbers it was read from.

A verdict is a dict {claim, word, numbers, line}: `word` is one of a few fixed words per claim (so a reader or a
test can match on it), `numbers` the values it was decided from (all in the run's results.json), `line` the sentence
printed in summaries and at the top of the report. The rules are fixed here, before any result is seen:
- the blind baseline: separable when its AUC lies outside its permutation null's 95% range, either side;
- memory: the target remembers its forget set when the Min-K% AUC's 95% interval lies above 0.5;
- unlearning: `overshoots` when the forget perplexity is over OVERSHOOT × the exact retrain's or the paired ΔAUC
  (unlearned − retrain) lies below 0 (the forget set stands out the other way: itself a membership signal);
  `still remembers` when under 1 / OVERSHOOT × or ΔAUC above 0; else `looks like the retrain`;
- the positive control is `seen` when some attack's paired ΔAUC interval (control − baseline) lies above 0;
- a poisoned release `raises` leakage when some attack's interval lies above 0, `does not raise` otherwise — and
  claims nothing (`no claim`) unless the control was seen on the same harness;
- a release screened by the victim before fine-tuning (`lethe screen`) is `flagged` when its test rejects at the
  screen's own false-positive rate on some seed, `not flagged` when it never does, `not screened` when every seed
  had too few records to test.
"""

from __future__ import annotations

# the forget perplexity within this factor of the exact retrain's counts as landing where the retrain is
OVERSHOOT = 1.5


def verdict(claim: str, word: str, numbers: dict, line: str) -> dict:
    return {"claim": claim, "word": word, "numbers": numbers, "line": line}


def _interval(ci: list[float]) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def blind_split(blind: dict) -> dict:
    auc, (low, high) = blind["auc"], blind["ci95"]
    word = "separable" if auc > high or auc < low else "not separable"
    side = " (below its null: the texts differ the other way)" if auc < low else ""
    return verdict("blind", word, {"auc": auc, "null_ci95": [low, high]},
                   f"The split is {word} without the model: a text classifier's AUC {auc:.3f} against its "
                   f"permutation null {low:.3f}–{high:.3f}{side}"
                   + ("; the Min-K% AUCs below are no evidence of membership." if word == "separable" else "."))


def remembers(mia: dict) -> dict:
    auc, ci = mia["auc"], mia["ci95"]
    word = "remembers" if ci[0] > 0.5 else "not shown"
    what = "remembers its forget set" if word == "remembers" else "is not shown to remember its forget set"
    return verdict("target remembers", word, {"mink_auc": auc, "ci95": ci},
                   f"The target {what}: Min-K% AUC {auc:.3f} (95% interval {ci[0]:.3f}–{ci[1]:.3f}) between its "
                   "forget set and unseen documents of the same source.")


def unlearning_lands(distance: dict, retrain_auc: float) -> dict:
    ratio, delta, ci = distance["forget_ppl_ratio"], distance["mia_auc"], distance["mia_auc_ci95"]
    ratio_ci = distance.get("forget_ppl_ratio_ci95")  # distances saved before it have none
    if ratio > OVERSHOOT or ci[1] < 0:
        word, what = "overshoots", "overshoots: its forget set now stands out the other way"
    elif ratio < 1 / OVERSHOOT or ci[0] > 0:
        word, what = "still remembers", "still remembers its forget set"
    else:
        word, what = "looks like the retrain", "looks like the exact retrain on its forget set"
    return verdict("unlearning", word, {"forget_ppl_ratio": ratio, "forget_ppl_ratio_ci95": ratio_ci,
                                        "delta_auc": delta, "ci95": ci, "retrain_auc": retrain_auc},
                   f"After unlearning the model {what}: forget perplexity {ratio:.2f}× the exact retrain's"
                   + (f" (95% interval {ratio_ci[0]:.2f}–{ratio_ci[1]:.2f}, documents resampled)" if ratio_ci else "")
                   + f" (within {OVERSHOOT}× counts as landing), Min-K% AUC {delta:+.3f} from the retrain's "
                   f"{retrain_auc:.3f} "
                   f"(paired 95% interval {_interval(ci)}).")


def _best_attack(by_attack: dict) -> tuple[str, dict]:
    """The attack whose interval lies highest (its lower bound): the one that shows an effect if any does."""
    return max(by_attack.items(), key=lambda item: item[1]["ci95"][0])


def control_seen(comparisons: dict, control: str | None) -> dict:
    if control is None or control not in comparisons:
        return verdict("control", "absent", {},
                       "No positive control ran: the leakage verdicts below claim nothing.")
    mode, by_attack = next(iter(comparisons[control].items()))
    attack, best = _best_attack(by_attack)
    word = "seen" if best["ci95"][0] > 0 else "not seen"
    return verdict("control", word, {"variant": control, "mode": mode, "attack": attack,
                                     "delta_auc": best["delta_auc"], "ci95": best["ci95"]},
                   f"The positive control ({control}) is {word} by this harness: {attack} ΔAUC "
                   f"{best['delta_auc']:+.3f} against the benign release "
                   f"(paired 95% interval {_interval(best['ci95'])})"
                   + ("." if word == "seen" else "; the leakage verdicts claim nothing."))


def leakage_raised(comparisons: dict, variant: str, control: dict) -> dict:
    mode, by_attack = next(iter(comparisons[variant].items()))
    attack, best = _best_attack(by_attack)
    numbers = {"variant": variant, "mode": mode, "attack": attack, "delta_auc": best["delta_auc"],
               "ci95": best["ci95"]}
    shown = f"{attack} ΔAUC {best['delta_auc']:+.3f} against benign (paired 95% interval {_interval(best['ci95'])})"
    if control["word"] != "seen":
        return verdict("leakage", "no claim", numbers,
                       f"{variant}: no claim, since the harness did not show its control ({shown}).")
    word = "raises" if best["ci95"][0] > 0 else "does not raise"
    return verdict("leakage", word, numbers, f"{variant} {word} the victim's leakage: {shown}, the strongest of "
                   f"{len(by_attack)} attacks.")


def screened(variant: str, by_seed: dict) -> dict:
    """The victim's screen of one release, over the seeds it ran on (the leakage study's `screen.<variant>`)."""
    tested = {seed: screen for seed, screen in by_seed.items() if "skipped" not in screen}
    if not tested:
        reason = next(iter(by_seed.values()))["skipped"] if by_seed else "no screening ran"
        return verdict("screen", "not screened", {"variant": variant},
                       f"Screening {variant} before fine-tuning: not screened ({reason}).")
    flagged = [seed for seed, screen in tested.items() if screen["anomalous"]]
    p_values = {seed: screen["p_value"] for seed, screen in tested.items()}
    word = "flagged" if flagged else "not flagged"
    shown = ", ".join(f"p = {p:.3g}" for p in p_values.values())
    return verdict("screen", word, {"variant": variant, "p_values": p_values, "flagged_seeds": flagged},
                   f"Screening {variant} before fine-tuning (the victim's own records against held-out ones and the "
                   f"clean model): {word}, {shown}.")
