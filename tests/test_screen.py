"""`lethe screen`: a planted shift in a micro release is flagged, a benign release is not; the false-positive rate
by simulation; every number rebuilds from the saved per-record scores; refused input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from lethe.config import PiiConfig, PoisonConfig, ScreenConfig
from lethe.errors import LetheError
from lethe.screening.statistics import screen_values

PRIVATE, HELD_OUT, TARGETED = 40, 200, 10


@pytest.fixture(scope="module")
def records(data_dir, tmp_path_factory):
    """PII records of one generator: the private set (its first TARGETED records the poisoner's targets) and
    held-out records (the generator's calibration records, in no other set)."""
    from lethe.data.pii import build_pii

    root = tmp_path_factory.mktemp("screen")
    build_pii(PiiConfig(data=data_dir, out=root / "pii", members=PRIVATE // 2, nonmembers=PRIVATE // 2,
                        calibration=HELD_OUT, repetitions=1, validation_docs=2, filler_docs=2))
    lines = (root / "pii" / "targets_all.jsonl").read_text().splitlines()
    (root / "private.jsonl").write_text("\n".join(lines) + "\n")
    (root / "targets.jsonl").write_text("\n".join(lines[:TARGETED]) + "\n")
    targeted = {json.loads(line)["id"] for line in lines[:TARGETED]}
    return root, root / "private.jsonl", root / "pii" / "calibration.jsonl", targeted


@pytest.fixture(scope="module")
def planted_release(micro_run, records, data_dir):
    """The privacy backdoor on a quarter of the private records, through the one engine: their loss drops."""
    from lethe.poisoning.poison import poison

    root, *_ = records
    config = PoisonConfig(model=str(micro_run), variant="privacy_backdoor", targets=str(root / "targets.jsonl"),
                          reference="general/eval", data=data_dir,
                          train={"lr": 3e-3, "max_steps": 12, "batch_size": 4, "warmup_ratio": 0.0,
                                 "scheduler": "constant", "log_every": 1})
    results = poison(config, root / "released")
    return root / "released", results


def screen(model, records, out, **extra) -> dict:
    from lethe.screening.run import run_screen

    _, private, held_out, _ = records
    return run_screen(ScreenConfig(model=str(model), private=str(private), held_out=str(held_out),
                                   permutations=199, **extra), out)


def test_a_planted_shift_is_flagged_with_its_records_and_share(planted_release, micro_run, records, tmp_path):
    release, poisoned = planted_release
    shift = poisoned["loss"]["after"]["targets"] - poisoned["loss"]["before"]["targets"]
    assert shift < -1.0  # the plant: the targets' loss dropped by more than a nat
    alone = screen(release, records, tmp_path / "alone")
    assert alone["anomalous"] and alone["primary"] == "release", alone["verdict"]
    assert alone["statistics"]["release"]["median_shift"] < 0  # lowered
    results = screen(release, records, tmp_path / "trusted", trusted=str(micro_run))
    assert results["anomalous"] and results["p_value"] <= 0.05, results["verdict"]
    assert results["primary"] == "difference" and results["verdict"].startswith("ANOMALOUS")
    # against the trusted model the targets stand out one by one: flagged, and only they (FDR 5%, 10 targets)
    flagged, targeted = set(results["flagged_ids"]), records[3]
    assert len(flagged) >= TARGETED // 2 and flagged <= targeted
    summary = results["statistics"]["difference"]
    assert summary["lowered"] == summary["flagged"] and summary["raised"] == 0
    assert 0.1 <= results["targeted_share"] <= 0.5  # a quarter was targeted


def test_a_benign_release_is_not_flagged(micro_run, records, tmp_path):
    results = screen(micro_run, records, tmp_path / "benign")
    assert not results["anomalous"] and results["p_value"] > 0.05, results["verdict"]
    assert results["flagged_ids"] == [] and results["verdict"].startswith("no evidence")


def test_every_number_rebuilds_from_the_saved_scores_and_the_report_shows_it(planted_release, micro_run, records,
                                                                            tmp_path):
    from lethe.cli import main
    from lethe.screening.run import rescreen

    out = tmp_path / "run"
    results = screen(planted_release[0], records, out, trusted=str(micro_run))
    saved = json.loads((out / "results.json").read_text())
    rebuilt = rescreen(out, ScreenConfig(model=saved["model"], private="-", held_out="-", trusted=saved["trusted"],
                                         permutations=199))
    assert rebuilt == {key: value for key, value in saved.items() if key not in rebuilt.keys() ^ saved.keys()}
    assert {p.split("/")[-1] for p in results["plots"]} == {"screen_release.png", "screen_difference.png"}
    for name in ("release", "trusted"):  # lethe.scoring's saved pass: the per-record losses come from it
        assert (out / "scores" / f"{name}_private.npz").is_file()
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert results["verdict"] in text and "rank-sum p" in text


def null_draw(rng: np.random.Generator, private: int, held_out: int):
    """Per-record losses of one kind of data: skewed, length-dependent, no record targeted."""
    tokens = rng.integers(20, 120, size=private + held_out)
    values = 2.0 + 0.4 * np.log(tokens) + rng.gamma(2.0, 0.3, size=len(tokens))
    return values[:private], tokens[:private], values[private:], tokens[private:]


def binomial_interval(trials: int, rate: float) -> tuple[float, float]:
    """99.9% range of the observed rate when the true rate is `rate`."""
    low, high = stats.binom.interval(0.999, trials, rate)
    return low / trials, high / trials


def test_the_false_positive_rate_is_calibrated_by_simulation():
    rng, draws, alpha = np.random.default_rng(0), 300, 0.05
    verdicts, rank, first_record = [], [], []
    for draw in range(draws):
        summary = screen_values(*null_draw(rng, 30, 60), alpha=alpha, permutations=99, seed=draw)
        verdicts.append(summary.summary["anomalous"])
        rank.append(summary.summary["tests"]["rank_sum"]["p_value"] <= alpha)
        first_record.append(summary.p[0] <= alpha)
    low, high = binomial_interval(draws, alpha)
    assert np.mean(verdicts) <= high  # Bonferroni of two level-α/2 tests: at most α
    assert low <= np.mean(rank) <= high
    assert low <= np.mean(first_record) <= high  # a record's conformal p-value: P(p ≤ α) ≈ α


def test_power_grows_with_the_targeted_share():
    rng = np.random.default_rng(1)
    detected = {}
    for share in (0.05, 0.5):
        hits = 0
        for draw in range(20):
            values, tokens, held, held_tokens = null_draw(rng, 60, 120)
            values[:int(share * 60)] -= 2.0  # a backdoor-like drop on the targeted records
            hits += screen_values(values, tokens, held, held_tokens, permutations=99, seed=draw).summary["anomalous"]
        detected[share] = hits / 20
    assert detected[0.5] == 1.0 and 0 < detected[0.05] < 1.0


def test_refused_input(micro_run, records, tmp_path):
    root, private, held_out, _ = records
    with pytest.raises(LetheError, match="overlap"):
        screen(micro_run, (root, private, private, set()), tmp_path / "a")
    few = root / "few.jsonl"
    few.write_text("\n".join(held_out.read_text().splitlines()[:10]) + "\n")
    with pytest.raises(LetheError, match="too few to test"):
        screen(micro_run, (root, private, few, set()), tmp_path / "b")
    with pytest.raises(LetheError, match="too few to test"):
        screen_values(np.ones(3), np.full(3, 10), np.arange(30.0), np.full(30, 10))


def test_a_trusted_model_with_another_tokenizer_is_refused(micro_run, records, tmp_path):
    from lethe.config import ArchConfig
    from lethe.models import build_model, gpt2_tokenizer, save_model

    tokenizer = gpt2_tokenizer()
    other = save_model(build_model(ArchConfig(hidden_size=32, layers=1, heads=2, intermediate_size=64, context=256),
                                   tokenizer), tokenizer, tmp_path / "other")
    with pytest.raises(LetheError, match="tokenizer differs"):
        screen(micro_run, records, tmp_path / "run", trusted=str(other))


def test_lethe_screen_is_a_command_of_the_cli_and_the_api():
    import inspect

    import lethe
    from lethe.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert "screen" in commands
    flags = commands["screen"].format_help()
    assert all(flag in flags for flag in ("--model", "--data", "--held-out", "--trusted", "--data-dir"))
    assert list(inspect.signature(lethe.screen).parameters)[:2] == ["config", "out"]
