"""The scripts in examples/ run end to end on a CPU and print their numbers."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NUMBER = r"-?\d+\.\d+"
RELEASES = ("benign", "privacy_backdoor", "forget_to_flourish")


def run_example(name: str, out: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(EXAMPLES.parent)}
    done = subprocess.run([sys.executable, str(EXAMPLES / name), str(out)], capture_output=True, text=True,
                          timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_unlearn_example_stops_at_the_yardstick(tmp_path):
    stdout = run_example("unlearn_tiny.py", tmp_path)
    rows = {m.group(1): [float(x) for x in m.group(2).split()]
            for m in re.finditer(rf"^(before|after)\s+((?:{NUMBER}[ \t]*)+)$", stdout, re.MULTILINE)}
    (forget_before, approx_before, gap_before, auc_before), (forget_after, _, gap_after, auc_after) = (
        rows["before"], rows["after"])
    assert forget_before < approx_before and gap_before < 0 and auc_before > 0.5  # members look seen
    assert forget_after > forget_before and gap_after > gap_before and auc_after < auc_before
    # the printed rows are the numbers the run saved
    saved = json.loads((tmp_path / "unlearn" / "results.json").read_text())
    for stage in ("before", "after"):
        m = saved[stage]
        assert rows[stage] == [round(m["ppl"]["forget"], 1), round(m["ppl"]["approximate"], 1),
                               round(m["approx_gap"]["log_ppl_ratio"], 3), round(m["mia"]["auc"], 3)], stage
    assert saved["train"]["stopped"] == "early_stop"
    assert f"{saved['train']['steps']} unlearning steps (stopped: early_stop)" in stdout


@pytest.mark.slow
def test_leakage_example_prints_an_auc_per_attack_and_release(tmp_path):
    stdout = run_example("leakage_micro.py", tmp_path)
    blind = re.search(rf"AUC ({NUMBER}), permutation null 95% range ({NUMBER})–({NUMBER})", stdout)
    assert blind and float(blind.group(2)) < float(blind.group(3))
    saved = {variant: json.loads((tmp_path / variant / "mia" / "results.json").read_text()) for variant in RELEASES}
    assert all(mia["members"] == mia["nonmembers"] == 24 for mia in saved.values())
    for attack in ("loss", "zlib", "min_k", "reference_model"):
        aucs = re.search(rf"^{attack}\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})$", stdout, re.MULTILINE)
        assert aucs, f"no AUCs for {attack} in:\n{stdout}"
        # one column per release, each the AUC that release's attack run saved
        assert list(aucs.groups()) == [f"{saved[variant]['attacks'][attack]['auc']:.3f}" for variant in RELEASES]
        for variant in ("privacy_backdoor", "forget_to_flourish"):
            delta = re.search(rf"^{variant}\s+{attack}\s+([-+]{NUMBER})\s+\[([-+]{NUMBER}), ([-+]{NUMBER})\]$",
                              stdout, re.MULTILINE)
            assert delta and float(delta.group(2)) <= float(delta.group(1)) <= float(delta.group(3))
            # paired over the same records, the difference is AUC(release) − AUC(benign)
            difference = saved[variant]["attacks"][attack]["auc"] - saved["benign"]["attacks"][attack]["auc"]
            assert float(delta.group(1)) == pytest.approx(difference, abs=5e-4 + 1e-12)
