"""`lethe target`: known members on a pre-trained model, and an exact retrain that differs only in them."""

import json

import pytest

from lethe.config import TargetConfig, UnlearningStudyConfig
from lethe.errors import LetheError


@pytest.fixture(scope="module")
def target(micro_run, data_dir, tmp_path_factory):
    from lethe.training.target import build_target

    out = tmp_path_factory.mktemp("target") / "run"
    config = TargetConfig(model=str(micro_run), data=data_dir, forget=["code/forget"],
                          train={"lr": 3e-3, "epochs": 4, "batch_size": 8, "warmup_ratio": 0, "scheduler": "constant"})
    return out, build_target(config, out)


def test_the_pair_differs_only_in_the_forget_documents(target, data_dir, tmp_path):
    from lethe.data.splits import load_splits
    from lethe.reporting import write_report

    out, results = target
    members = json.loads((out / "members.json").read_text())
    assert results["target"]["splits"] == ["code/forget", "code/retain"] and results["retrain"]["splits"] == [
        "code/retain"]
    trained = {who: {doc for docs in splits.values() for doc in docs} for who, splits in members.items()}
    forget = {doc.id for doc in load_splits(data_dir, ["code/forget"])["code/forget"]}
    assert trained["target"] - trained["retrain"] == forget and trained["retrain"] <= trained["target"]
    assert results["target"]["steps"] > results["retrain"]["steps"]  # same recipe, more data
    ppl = results["ppl"]
    # the target trained on the forget set: its forget perplexity falls below the unseen approximate set's;
    # the retrain never saw it
    assert ppl["target"]["code/forget"] < ppl["target"]["code/approximate"]
    assert ppl["target"]["code/forget"] < 0.8 * ppl["retrain"]["code/forget"]
    html = write_report([out], tmp_path / "report").read_text()
    assert "(exact retrain)" in html and f"{ppl['retrain']['code/forget']:.3f}" in html


def test_the_unlearning_study_uses_the_exact_retrain_of_a_target(target, data_dir, tmp_path):
    from lethe.unlearning.study import run_experiment

    out, _ = target
    config = UnlearningStudyConfig(model=str(out), data=data_dir, domains=["code"], methods=["ga_gd_in"],
                                   retrain=True, unlearn={"train": {"lr": 1e-3, "max_steps": 3, "batch_size": 4},
                                                          "eval": {"blind": {"permutations": 20}}})
    results = run_experiment(config, tmp_path / "study")
    assert not (tmp_path / "study" / "retrain" / "code" / "model").exists()  # nothing retrained: it exists
    retrained = results["by_domain"]["code"]["retrained"]
    assert retrained["ppl"]["forget"] == pytest.approx(target[1]["ppl"]["retrain"]["code/forget"], rel=1e-4)
    assert "retrain_distance" in results["ga_gd_in"] and results["blind"]["code"]["members"] > 0
    cost = results["by_domain"]["code"]["ga_gd_in"]["cost"]
    assert cost["ratio_vs_pretrain"] == pytest.approx(
        json.loads((out / "results.json").read_text())["retrain"]["tokens"] / cost["tokens"])
    with pytest.raises(LetheError, match="exact only for unlearning one domain"):
        run_experiment(config.model_copy(update={"domains": ["books"]}), tmp_path / "other")
