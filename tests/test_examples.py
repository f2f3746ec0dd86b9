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
    assert "stopped: early_stop" in stdout and (tmp_path / "unlearn" / "results.json").is_file()


@pytest.mark.slow
def test_leakage_example_prints_an_auc_per_attack_and_release(tmp_path):
    stdout = run_example("leakage_micro.py", tmp_path)
    blind = re.search(rf"AUC ({NUMBER}), permutation null 95% range ({NUMBER})–({NUMBER})", stdout)
    assert blind and float(blind.group(2)) < float(blind.group(3))
    for attack in ("loss", "zlib", "min_k", "reference_model"):
        aucs = re.search(rf"^{attack}\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})$", stdout, re.MULTILINE)
        assert aucs, f"no AUCs for {attack} in:\n{stdout}"
        for variant in ("privacy_backdoor", "forget_to_flourish"):
            delta = re.search(rf"^{variant}\s+{attack}\s+([-+]{NUMBER})\s+\[([-+]{NUMBER}), ([-+]{NUMBER})\]$",
                              stdout, re.MULTILINE)
            assert delta and float(delta.group(2)) <= float(delta.group(1)) <= float(delta.group(3))
    benign = float(re.search(rf"^loss\s+({NUMBER})", stdout, re.MULTILINE).group(1))
    for variant in RELEASES:
        mia = json.loads((tmp_path / variant / "mia" / "results.json").read_text())
        assert mia["members"] == mia["nonmembers"] == 24
    assert json.loads((tmp_path / "benign" / "mia" / "results.json").read_text())["attacks"]["loss"]["auc"] == \
        pytest.approx(benign, abs=5e-4)
