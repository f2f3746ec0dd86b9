"""Membership-inference attacks: formulas by hand, MIMIR's sign convention, real attacks on real models."""

import json
import math
import zlib

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lethe.attacks import AttackInputs, attacks, bootstrap_intervals, tpr_at_fpr
from lethe.attacks.metrics import mia_metrics
from lethe.config import ChunkConfig, MiaConfig, TrainConfig
from lethe.data.chunking import chunk_documents
from lethe.data.documents import read_documents, write_documents
from lethe.data.splits import load_splits
from lethe.errors import LetheError
from lethe.scoring import TokenScores

PER_EXAMPLE = ("lira_online", "lira_offline", "rmia")  # without reference victims, not run by default


def synthetic_scores() -> TokenScores:
    """Two samples (3 and 5 tokens) with fixed log-probs and vocabulary statistics."""
    logprob = np.array([-1.0, -3.0, -0.5, -2.0, -0.1, -4.0, -0.2, -1.5], dtype=np.float32)
    return TokenScores(ids=["a", "b"], offsets=np.array([0, 3, 8]), target_ids=np.arange(8, dtype=np.int32),
                       logprob=logprob, vocab_mean=np.full(8, -2.0, dtype=np.float32),
                       vocab_var=np.array([1, 4, 1, 4, 1, 4, 1, 4], dtype=np.float32),
                       correct=np.zeros(8, dtype=bool))


def test_each_attack_matches_its_formula_and_is_minus_mimirs_score():
    s = synthetic_scores()
    samples = [[-1.0, -3.0, -0.5], [-2.0, -0.1, -4.0, -0.2, -1.5]]
    nll = [-sum(x) / len(x) for x in samples]
    texts = ["def f(x): return x", "aaaa aaaa aaaa aaaa"]
    reference = TokenScores(**{**s.__dict__, "logprob": s.logprob - 1.0})
    inputs = AttackInputs(target=s, texts=texts, reference=reference, calibration_nll=np.array([0.5, 1.0, 2.0, 3.0]),
                          grad_norms=np.array([0.3, 0.7]))

    def mimir_min_k(logp, k):  # MIMIR: −mean of the k% lowest, "lower = member"
        return -np.mean(np.sort(logp)[:max(1, int(len(logp) * k))])

    expected = {
        "loss": [-n for n in nll],
        "zlib": [-n / len(zlib.compress(t.encode())) for n, t in zip(nll, texts, strict=True)],
        "min_k": [-mimir_min_k(np.array(x), 0.4) for x in samples],
        "min_k_pp": [np.mean(sorted([(-1.0 + 2) / 1, (-3.0 + 2) / 2, (-0.5 + 2) / 1])[:1]),
                     np.mean(sorted([(-2.0 + 2) / 2, (-0.1 + 2) / 1, (-4.0 + 2) / 2, (-0.2 + 2) / 1,
                                     (-1.5 + 2) / 2])[:2])],
        "reference_model": [(n + 1.0) - n for n in nll],
        # fraction of calibration NLLs ≤ the sample's, add-one smoothed: a: 2 of 4 (0.5, 1.0 ≤ 1.5); b: 2 of 4
        "reference_data": [-math.log(3 / 5), -math.log(3 / 5)],
        "gradnorm": [-0.3, -0.7],
    }
    # the per-example attacks need reference victims: tests/test_per_example.py and test_reference_victims.py
    assert sorted(expected) == [name for name in attacks.names() if name not in PER_EXAMPLE]
    for name, values in expected.items():
        assert attacks.get(name)(inputs, min_k=40) == pytest.approx(values, rel=1e-6), name


def test_tpr_at_low_fpr_on_a_synthetic_score_set():
    members = np.array([0.9, 0.8, 0.35, 0.7, 0.2])
    nonmembers = np.array([0.85, 0.3, 0.25, 0.1, 0.05, 0.4, 0.15, 0.45, 0.5, 0.55])
    labels = np.r_[np.ones(5), np.zeros(10)]
    scores = np.r_[members, nonmembers]
    # FPR 0: thresholds above 0.85 catch 0.9 only → TPR 1/5. FPR ≤ 10%: one non-member (0.85) passes → 0.9, 0.85,
    # 0.8, 0.7 → TPR 3/5. FPR ≤ 20%: up to 0.55 → still 3/5 (next member 0.35 is below 0.5 and 0.45).
    assert tpr_at_fpr(labels, scores, 0.0) == pytest.approx(1 / 5)
    assert tpr_at_fpr(labels, scores, 0.1) == pytest.approx(3 / 5)
    assert tpr_at_fpr(labels, scores, 0.2) == pytest.approx(3 / 5)
    metrics = mia_metrics(members, nonmembers, resamples=200)
    assert metrics["auc"] == pytest.approx(36 / 50)  # member-above-non-member pairs counted by hand
    low, high = metrics["ci95"]["auc"]
    assert low < metrics["auc"] < high


def test_bootstrap_interval_covers_chance_for_identical_distributions():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=200), rng.normal(size=200)
    low, high = bootstrap_intervals(a, b, resamples=300)["auc"]
    assert low < 0.5 < high and high - low < 0.2


# -- real models ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unseen_sets(corpus_files, data_dir, tmp_path_factory):
    """Three disjoint sets of real documents the micro model never saw: members, non-members, calibration."""
    used = {doc.id for docs in load_splits(data_dir).values() for doc in docs}
    fresh = [d for d in read_documents(corpus_files["books"]) if d.id not in used and len(d.text) > 800]
    fresh = [type(d)(d.id, d.text[:700], d.domain, d.source, d.licence) for d in fresh]
    if len(fresh) < 60:
        pytest.skip("not enough unseen documents in the local books corpus")
    out = tmp_path_factory.mktemp("mia-sets")
    paths = {}
    for index, name in enumerate(("members", "nonmembers", "calibration")):
        paths[name] = out / f"{name}.jsonl"
        write_documents(paths[name], fresh[index * 20:(index + 1) * 20])
    return paths


@pytest.fixture(scope="module")
def overfit_run(micro_model, micro_run, unseen_sets, tmp_path_factory):
    """The micro model fine-tuned until it memorises the member documents."""
    from lethe.engine import Trainer, objectives
    from lethe.models import load_model, save_model

    model, tokenizer = load_model(micro_run)
    chunks = chunk_documents(read_documents(unseen_sets["members"]), tokenizer, ChunkConfig(length=128), 256)
    torch.manual_seed(0)
    trainer = Trainer(model, objectives.get("lm")(), {"train": chunks},
                      TrainConfig(lr=3e-3, epochs=25, batch_size=8, warmup_ratio=0), pad_id=tokenizer.pad_token_id)
    trainer.fit()
    return save_model(trainer.unwrapped_model(), tokenizer, tmp_path_factory.mktemp("overfit") / "model")


def mia_config(model, sets, **extra) -> MiaConfig:
    return MiaConfig(model=str(model), members=str(sets["members"]), nonmembers=str(sets["nonmembers"]),
                     bootstrap=200, **extra)


def test_every_attack_separates_memorised_members(overfit_run, micro_run, unseen_sets, tmp_path):
    from lethe.attacks.mia_suite import load_sample_scores, run_mia

    config = mia_config(overfit_run, unseen_sets, reference_model=str(micro_run),
                        calibration=str(unseen_sets["calibration"]))
    results = run_mia(config, tmp_path / "mia")
    assert sorted(results["attacks"]) == [name for name in attacks.names() if name not in PER_EXAMPLE]
    for name, metrics in results["attacks"].items():
        assert metrics["auc"] > 0.9, (name, metrics)
        assert set(metrics) >= {"auc", "tpr@0.1%fpr", "tpr@1%fpr", "tpr@5%fpr", "ci95"}
    saved = json.loads((tmp_path / "mia" / "results.json").read_text())
    assert saved["attacks"]["loss"]["auc"] == results["attacks"]["loss"]["auc"]
    # every number rebuilds from the per-sample scores alone
    rebuilt = load_sample_scores(tmp_path / "mia")
    for name, sets in rebuilt.items():
        assert mia_metrics(sets["members"], sets["nonmembers"], resamples=0)["auc"] == results["attacks"][name]["auc"]
    assert (tmp_path / "mia" / "plots" / "roc_loglog.png").stat().st_size > 0


def test_two_halves_of_one_unseen_set_look_like_chance(micro_run, unseen_sets, tmp_path):
    from lethe.attacks.mia_suite import load_sample_scores, run_mia

    run_mia(mia_config(micro_run, unseen_sets, calibration=str(unseen_sets["calibration"])), tmp_path / "mia")
    for name, sets in load_sample_scores(tmp_path / "mia").items():
        low, high = bootstrap_intervals(sets["members"], sets["nonmembers"], resamples=500, level=0.99)["auc"]
        assert low <= 0.5 <= high, name


def test_run_mia_builds_exactly_the_inputs_the_selected_attacks_declare(micro_run, unseen_sets, tmp_path,
                                                                       monkeypatch):
    """No attack is special-cased by name: a new attack declaring gradient norms and vocabulary statistics gets
    both, and the loss attack alone costs neither a gradient pass nor the vocabulary statistics."""
    import lethe.attacks.mia_suite as mia
    from lethe.attacks.membership import Attack

    received = []

    def flatness(inputs: AttackInputs) -> np.ndarray:
        received.append((inputs.grad_norms, inputs.vocab_stats[1]))
        return -inputs.grad_norms

    monkeypatch.setitem(attacks._entries, "flatness", Attack(flatness, needs=("grad_norms", "vocab_stats")))
    calls = []
    gradient_norms, score_chunks = mia.sample_gradient_norms, mia.score_chunks

    def counted_gradient_norms(*args, **kwargs):
        calls.append(kwargs["desc"])
        return gradient_norms(*args, **kwargs)

    def counted_scoring(*args, **kwargs):
        calls.append(f"{kwargs['desc']}, vocabulary statistics {kwargs['vocab_stats']}")
        return score_chunks(*args, **kwargs)

    monkeypatch.setattr(mia, "sample_gradient_norms", counted_gradient_norms)
    monkeypatch.setattr(mia, "score_chunks", counted_scoring)
    results = mia.run_mia(mia_config(micro_run, unseen_sets, attacks=["flatness"], blind=None), tmp_path / "a")
    assert calls == ["scoring members, vocabulary statistics True", "scoring nonmembers, vocabulary statistics True",
                     "gradient norms, members", "gradient norms, nonmembers"]
    assert [len(norms) for norms, _ in received] == [results["members"], results["nonmembers"]]
    assert all((norms > 0).all() and not np.isnan(variance).any() for norms, variance in received)
    calls.clear()
    mia.run_mia(mia_config(micro_run, unseen_sets, attacks=["loss"], blind=None), tmp_path / "b")
    assert calls == ["scoring members, vocabulary statistics False", "scoring nonmembers, vocabulary statistics False"]


def test_bad_inputs_are_refused(micro_run, unseen_sets, tmp_path):
    from lethe.attacks.mia_suite import run_mia
    from lethe.config import ArchConfig
    from lethe.models import build_model, gpt2_tokenizer, save_model

    overlap = dict(unseen_sets, nonmembers=unseen_sets["members"])
    with pytest.raises(LetheError, match="overlap in 20 documents"):
        run_mia(mia_config(micro_run, overlap), tmp_path / "a")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(LetheError, match="is empty"):
        run_mia(mia_config(micro_run, dict(unseen_sets, members=empty)), tmp_path / "b")
    with pytest.raises(LetheError, match="neither a file nor a split"):
        run_mia(mia_config(micro_run, dict(unseen_sets, members="nowhere/forget")), tmp_path / "c")
    with pytest.raises(LetheError, match="needs --reference-model"):
        run_mia(mia_config(micro_run, unseen_sets, attacks=["reference_model"]), tmp_path / "d")
    tokenizer = gpt2_tokenizer()
    other = save_model(build_model(ArchConfig(hidden_size=32, layers=1, heads=2, intermediate_size=64, context=256),
                                   tokenizer), tokenizer, tmp_path / "other")
    with pytest.raises(LetheError, match="tokenizer differs"):
        run_mia(mia_config(micro_run, unseen_sets, reference_model=str(other)), tmp_path / "e")


def test_cli_writes_the_documented_results(micro_run, unseen_sets, tmp_path):
    from lethe.cli import main

    out = tmp_path / "cli"
    code = main(["attack", "mia", "--model", str(micro_run), "--members", str(unseen_sets["members"]),
                 "--nonmembers", str(unseen_sets["nonmembers"]), "--out", str(out), "--set", "bootstrap=50",
                 "--set", "attacks=[loss,min_k_pp]"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["attacks"]) == ["loss", "min_k_pp"]
    rows = [json.loads(line) for line in (out / "scores" / "attack_scores.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and sorted(row["id"].rsplit("#", 1)[0] for row in rows if row["member"]) == sorted(
        doc.id for doc in read_documents(unseen_sets["members"]))  # one chunk ("<doc>#0") per 700-char document
    labels = np.array([int(row["member"]) for row in rows])
    for name in ("loss", "min_k_pp"):
        # every number in results.json rebuilds from the saved per-sample scores
        scores = np.array([row[name] for row in rows])
        metrics = results["attacks"][name]
        assert metrics["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12), name
        # with 20 non-members, FPR <= 1% allows none: the share of members above every non-member
        assert metrics["tpr@1%fpr"] == np.mean(scores[labels == 1] > scores[labels == 0].max()), name
    blind = results["blind"]
    assert blind["members"] == blind["nonmembers"] == 20 and len(blind["null"]) == blind["permutations"]
    # the verdict is read against the saved permutation null, and halves of one unseen set are not separable
    assert blind["ci95"] == pytest.approx(np.percentile(blind["null"], [2.5, 97.5]), abs=1e-4)
    assert blind["ci95"][0] <= blind["auc"] <= blind["ci95"][1] and not blind["separable"]


def test_a_split_separable_without_the_model_is_flagged(micro_run, data_dir, tmp_path):
    """Books against code: a text classifier needs no model to tell them apart, so no attack's AUC on this
    split is evidence of membership, and the results say so next to each attack."""
    from lethe.attacks.mia_suite import format_mia_table, run_mia

    config = MiaConfig(model=str(micro_run), members="books/approximate", nonmembers="code/approximate",
                       data=data_dir, bootstrap=100, attacks=["loss", "min_k"], blind={"permutations": 30})
    results = run_mia(config, tmp_path / "mia")
    blind = results["blind"]
    assert blind["separable"] and blind["auc"] > 0.9 and blind["auc"] > blind["ci95"][1]
    for name, metrics in results["attacks"].items():
        assert metrics["blind_verdict"] == "this split is separable without the model; the attack's AUC is not " \
                                           "evidence of membership", name
    table = format_mia_table(results)
    assert "blind baseline (text only, no model)" in table and "not evidence of membership" in table
