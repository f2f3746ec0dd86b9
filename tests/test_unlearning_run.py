"""Short unlearning runs of every method on the micro model, and bad input."""

import json
import shutil

import numpy as np
import pytest

from lethe.config import UnlearnConfig
from lethe.downstream_tasks import run_utility
from lethe.errors import LetheError, TrainingDiverged
from lethe.models import load_model
from lethe.unlearning.evaluation import load_role_scores
from lethe.unlearning.methods import methods
from lethe.unlearning.run import unlearn


def config(micro_run, data_dir, method, **overrides):
    base = {"model": str(micro_run), "data": str(data_dir), "domain": "books", "method": method,
            "train": {"lr": 3e-3, "epochs": 3, "batch_size": 8, "warmup_ratio": 0}}
    return UnlearnConfig.model_validate(base | overrides)


@pytest.fixture(scope="module")
def original_scores(micro_run, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("unlearn") / "first"
    unlearn(config(micro_run, data_dir, "ga_gd_in"), out)
    return load_role_scores(out / "scores" / "original", "books")


# a steering target beyond micro's layer-0 activations (norm ~2) and its retain weight; a small distillation budget
METHOD_ARGS = {"rmu": {"rmu_steering": 10.0, "rmu_alpha": 10.0}, "undo": {"undo_budget": 0.02}}


@pytest.mark.parametrize("method", methods.names())
def test_each_method_forgets_more_than_it_damages_unseen_data(method, micro_run, data_dir, original_scores, tmp_path):
    results = unlearn(config(micro_run, data_dir, method, method_args=METHOD_ARGS.get(method, {})), tmp_path / method,
                      original_scores=original_scores)
    before, after = results["before"]["ppl"], results["after"]["ppl"]
    forget_rise = after["forget"] / before["forget"]
    assert forget_rise > 1.05, f"{method} did not raise forget perplexity"
    assert forget_rise > after["approximate"] / before["approximate"]
    assert results["after"]["approx_gap"]["log_ppl_ratio"] > results["before"]["approx_gap"]["log_ppl_ratio"]
    assert results["cost"]["ratio_vs_pretrain"] > 1 and results["cost"]["flops"] > 0
    if method in ("npo", "adversarial"):  # the original model forwarded once per forget example, not every epoch
        assert results["cost"]["reference_tokens"] * 3 == results["train"]["tokens"]
    elif method in ("rmu", "undo"):  # the original's retain activations every step; the teacher's distillation
        assert results["cost"]["reference_tokens"] > 0
    elif not method.endswith(("kl_in", "kl_general")):
        assert results["cost"]["reference_tokens"] == 0
    # the reported numbers are those of the saved per-token scores of the unlearned model
    forget = np.load(tmp_path / method / "scores" / "unlearned" / "books" / "forget.npz")["logprob"]
    assert after["forget"] == pytest.approx(np.exp(-forget.astype(np.float64).mean()), rel=1e-12)


def test_results_record_membership_inference_for_every_k(micro_run, data_dir, original_scores, tmp_path):
    results = unlearn(config(micro_run, data_dir, "ga"), tmp_path / "r", original_scores=original_scores)
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert set(saved["after"]["mia_by_k"]) == {"30", "40", "50", "60", "100"}
    headline = str(config(micro_run, data_dir, "ga").eval.headline_k)
    headline_mia = dict(saved["after"]["mia"])
    low, high = headline_mia.pop("ci95")  # the headline alone carries a bootstrap interval
    assert saved["after"]["mia_by_k"][headline] == headline_mia and low < headline_mia["auc"] < high
    mia = saved["before"]["mia"]
    assert mia["auc"] > 0.5 and mia["auc_folded"] == max(mia["auc"], 1 - mia["auc"])
    assert saved["after"]["mia"]["auc"] < mia["auc"]
    assert results["before"] == saved["before"]


def test_stop_at_approximate_ends_once_forget_looks_unseen(micro_run, data_dir, original_scores, tmp_path):
    """Both yardsticks stop at their first crossing; the fixed one (the approximate set before unlearning) stops
    first, since gradient ascent raises the approximate set's perplexity too and so moves the other one away."""
    steps, evaluations = {}, {}
    for yardstick, key in (("current", "eval/log_ppl_ratio"), ("before", "eval/log_ppl_ratio_before")):
        run = config(micro_run, data_dir, "ga", stop_at_approximate=True, stop_yardstick=yardstick,
                     train={"lr": 3e-4, "epochs": 20, "batch_size": 8, "warmup_ratio": 0, "eval_every": 1})
        results = unlearn(run, tmp_path / yardstick, original_scores=original_scores)
        assert results["train"]["stopped"] == "early_stop"
        evaluations[yardstick] = [h for h in results["train"]["history"] if key in h]
        gaps = [h[key] for h in evaluations[yardstick]]
        assert gaps[-1] >= 0 and all(g < 0 for g in gaps[:-1])
        steps[yardstick] = results["train"]["steps"]
    before_ppl = original_scores["approximate"].perplexity()
    fixed, moving = evaluations["before"], evaluations["current"]
    assert fixed[-1]["eval/forget_ppl"] >= before_ppl > fixed[-2]["eval/forget_ppl"]
    assert "eval/approximate_ppl" not in fixed[-1]  # a fixed mark needs no approximate forwards while training
    assert moving[-1]["eval/approximate_ppl"] > before_ppl  # the moving yardstick did move
    assert steps["before"] < steps["current"]


def test_the_stop_keeps_the_model_nearer_the_mark(micro_run, data_dir, original_scores, tmp_path):
    """A run's saved model is the one its stop kept: the crossing step's with `crossing`; with `nearer`, that of the
    last two evaluations whose log perplexity ratio lies nearer 0."""
    key = "eval/log_ppl_ratio_before"
    for keeps in ("crossing", "nearer"):
        run = config(micro_run, data_dir, "ga", stop_at_approximate=True, stop_keeps=keeps,
                     train={"lr": 3e-4, "epochs": 20, "batch_size": 8, "warmup_ratio": 0, "eval_every": 1})
        results = unlearn(run, tmp_path / keeps, original_scores=original_scores)
        evaluations = [h for h in results["train"]["history"] if key in h]
        short, crossing = evaluations[-2:]
        assert short[key] < 0 <= crossing[key]
        kept = short if keeps == "nearer" and -short[key] < crossing[key] else crossing
        assert results["after"]["ppl"]["forget"] == pytest.approx(kept["eval/forget_ppl"], rel=1e-5), keeps
        assert results["train"].get("kept_step") == (kept["step"] if kept is short else None)
        assert results["train"]["steps"] == crossing["step"]  # the cost counts every step taken


def test_the_stop_restores_the_weights_of_the_evaluation_before(micro_model):
    """The band's two sides on a real model: a crossing farther past the mark than the evaluation before fell short
    brings that evaluation's weights back; a crossing nearer the mark keeps the weights as they are."""
    import torch

    from lethe.unlearning.run import StopAtApproximate

    model = micro_model[0]
    original = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    try:
        for ratio, restored in ((0.5, True), (0.05, False)):
            stop = StopAtApproximate("before", keep_nearer=True)
            stop.model = model
            model.load_state_dict(original)
            assert not stop.on_evaluate(1, {"log_ppl_ratio_before": -0.1})
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(0.01)
            moved = {name: tensor.clone() for name, tensor in model.state_dict().items()}
            assert stop.on_evaluate(2, {"log_ppl_ratio_before": ratio})
            expected = original if restored else moved
            assert all(torch.equal(tensor, expected[name]) for name, tensor in model.state_dict().items()), ratio
            assert stop.kept_step == (1 if restored else None)
    finally:
        model.load_state_dict(original)


def test_empty_forget_set_is_refused(micro_run, data_dir, tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    (broken / "books" / "forget.jsonl").write_text("")
    with pytest.raises(LetheError, match="forget.jsonl is empty"):
        unlearn(config(micro_run, broken, "ga"), tmp_path / "r")


def test_forget_approximate_overlap_is_refused(micro_run, data_dir, tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    leaked = (broken / "books" / "forget.jsonl").read_text().splitlines()[0]
    with (broken / "books" / "approximate.jsonl").open("a") as handle:
        handle.write(leaked + "\n")
    with pytest.raises(LetheError, match="forget and approximate sets overlap"):
        unlearn(config(micro_run, broken, "ga"), tmp_path / "r")


def test_missing_retain_set_is_refused(micro_run, data_dir, tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    (broken / "general" / "retain.jsonl").unlink()
    with pytest.raises(LetheError, match="needs the retain split 'general/retain'"):
        unlearn(config(micro_run, broken, "ga_gd_general"), tmp_path / "r")


def test_divergence_is_a_clear_error_and_earlier_results_survive(micro_run, data_dir, original_scores, tmp_path,
                                                                monkeypatch):
    from lethe.unlearning.methods import GradientAscent

    first = tmp_path / "kept"
    unlearn(config(micro_run, data_dir, "ga"), first, original_scores=original_scores)
    kept = (first / "results.json").read_text()
    calls = {"n": 0}
    ascend = GradientAscent.forget_loss

    def exploding(self, model, batch):  # what an unbounded ascent does in low precision, made deterministic
        calls["n"] += 1
        loss = ascend(self, model, batch)
        return loss * float("inf") if calls["n"] == 4 else loss

    monkeypatch.setattr(GradientAscent, "forget_loss", exploding)
    with pytest.raises(TrainingDiverged, match="ga diverged: .*became -?inf at step 4"):
        unlearn(config(micro_run, data_dir, "ga"), tmp_path / "wild", original_scores=original_scores)
    assert (first / "results.json").read_text() == kept
    assert json.loads((tmp_path / "wild" / "run.json").read_text())["status"] == "failed"


def test_utility_is_measured_on_held_out_text_before_and_after(micro_run, data_dir, original_scores, tmp_path):
    run = config(micro_run, data_dir, "ga", eval={"utility": True, "utility_limit": 20})
    results = unlearn(run, tmp_path / "r", original_scores=original_scores)
    before, after = results["before"]["utility"], results["after"]["utility"]
    assert {"lethe_cloze_books", "lethe_continuation_general", "mean"} <= set(before)
    assert before["mean"]["n"] == after["mean"]["n"] > 0
    task_dir = tmp_path / "r" / "utility_tasks"
    assert json.loads((task_dir / "utility_tasks.json").read_text())["excluded_documents"] > 0
    # before is the original model's score on the run's tasks, after the saved unlearned model's
    assert before == run_utility(*load_model(micro_run), task_dir, limit=20)
    assert after == run_utility(*load_model(tmp_path / "r"), task_dir, limit=20)
