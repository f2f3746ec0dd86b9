"""The per-example unlearning MIA (U-LiRA) on micro models: shadows trained with the target's recipe, unlearned
with the method under test, and every number rebuilt from the saved files."""

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lethe.cli import main
from lethe.config import UnlearningStudyConfig, read_yaml
from lethe.scoring import TokenScores
from lethe.training.pretrain import pretrain, pretrain_config
from lethe.unlearning.study import run_experiment

# a micro model of the code domain alone, trained for a few epochs: each shadow repeats this pre-training
RECIPE = {"splits": ["code/forget", "code/retain", "general/retain"], "train": {"epochs": 4}}
# gradient ascent at a learning rate that changes no weight: a method that does nothing
NOTHING = {"train": {"lr": 1e-12, "max_steps": 1, "warmup_ratio": 0}, "eval": {"blind": None}}


@pytest.fixture(scope="module")
def code_micro(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("u_mia") / "micro"
    pretrain(pretrain_config("micro", {"data": str(data_dir), **RECIPE}), out)
    return out


@pytest.fixture(scope="module")
def study(code_micro, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("u_mia") / "study"
    config = UnlearningStudyConfig(model=str(code_micro), data=data_dir, domains=["code"], methods=["ga"],
                                   unlearn=NOTHING, retrain=True, u_mia={"shadows": 4, "seed": 0},
                                   jobs=2)  # two processes: the parallel path, read back in order
    return out, config, run_experiment(config, out)


def test_a_method_that_does_nothing_is_detected_and_the_retrain_is_not(study):
    out, _, results = study
    rows = results["by_domain"]["code"]
    ga, retrained, original = rows["ga"]["u_mia"], rows["retrained"]["u_mia"], rows["original"]["u_mia"]
    assert ga["shadows"] == 4 and ga["forget_documents"] == 6 and ga["approximate_documents"] == 6
    # the unlearned model is the original, and its shadows are the trained ones: both rows find the forget set
    assert ga["auc"] >= 0.9 and original["auc"] >= 0.9
    assert ga["auc"] - retrained["auc"] >= 0.25
    assert ga["auc_minus_retrain"]["difference"] == pytest.approx(ga["auc"] - retrained["auc"])
    low, high = retrained["ci95"]
    assert low <= 0.5 <= high
    assert ga["detected_share"] > retrained["detected_share"]
    assert "per-example unlearning MIA" in (out / "results.md").read_text()
    shadows = json.loads((out / "u_mia" / "code" / "references.json").read_text())
    keep = np.array(shadows["keep"])
    assert keep.shape == (4, 12) and (keep.sum(0) == 2).all()  # each document in half the shadows


def test_shadows_train_on_their_half_and_are_unlearned_on_it(study):
    out, _, _ = study
    where = out / "u_mia" / "code"
    manifest = json.loads((where / "references.json").read_text())
    for k, kept in enumerate(manifest["keep"]):
        dealt = {record for record, k_ in zip(manifest["records"], kept, strict=True) if k_}
        members = json.loads((where / "shadows" / f"shadow-{k}" / "members.json").read_text())
        assert set(members["code/forget"]) == dealt
        unlearned = read_yaml(where / "unlearned" / "ga" / f"shadow-{k}" / "config.yaml")
        assert unlearned["method"] == "ga" and unlearned["train"]["lr"] == 1e-12
        assert Path(unlearned["model"]) == where / "shadows" / f"shadow-{k}" / "model"
        forgot = [json.loads(line)["id"] for line in (where / "views" / f"shadow-{k}" / "code" /
                                                       "forget.jsonl").read_text().splitlines()]
        assert set(forgot) == dealt


def test_a_document_score_is_rebuilt_from_the_saved_parameters(study):
    out, _, results = study
    saved = json.loads((out / "u_mia" / "code" / "attack" / "ga.json").read_text())
    online = saved["lira_online"]
    forget = TokenScores.load(out / "runs" / "code" / "ga" / "scores" / "unlearned" / "code" / "forget")
    record = saved["records"][0]
    chunks = [i for i, chunk_id in enumerate(forget.ids) if chunk_id.rsplit("#", 1)[0] == record]
    tokens = np.concatenate([forget.sample(i).astype(np.float64) for i in chunks])
    assert saved["target"][0] == pytest.approx(tokens.mean(), rel=1e-9)
    s, mu_in, sd_in, mu_out, sd_out = (saved["target"][0], online["mu_in"][0], online["sigma_in"][0],
                                       online["mu_out"][0], online["sigma_out"][0])
    log_density = lambda x, mu, sd: -0.5 * ((x - mu) / sd) ** 2 - np.log(sd * np.sqrt(2 * np.pi))  # noqa: E731
    assert online["scores"][0] == pytest.approx(log_density(s, mu_in, sd_in) - log_density(s, mu_out, sd_out))
    # the record's p-value: how often a model that never saw it scores it as IN-like, by simulation
    draws = np.random.default_rng(0).normal(mu_out, sd_out, 400_000)
    ratio = log_density(draws, mu_in, sd_in) - log_density(draws, mu_out, sd_out)
    assert online["pvalue"][0] == pytest.approx((ratio >= online["scores"][0]).mean(), abs=3e-3)
    member = np.array(saved["member"])
    scores = np.array(online["scores"])
    row = results["by_domain"]["code"]["ga"]["u_mia"]
    assert row["auc"] == pytest.approx(roc_auc_score(member, scores))
    assert row["detected_share"] == pytest.approx((np.array(online["pvalue"])[member] < 0.01).mean())


def test_a_resumed_study_trains_no_shadow_again(study):
    out, config, results = study
    where = out / "u_mia" / "code"
    kept = {path: path.read_text() for path in (where / "shadows" / "shadow-0" / "run.json",
                                                 where / "unlearned" / "ga" / "shadow-0" / "run.json")}
    # what a study stopped during the attack leaves: its record unfinished, no attack results yet
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps(record | {"status": "interrupted"}))
    for path in [out / "results.json", where / "results.json", *(where / "attack").iterdir()]:
        path.unlink()
    again = run_experiment(config.model_copy(update={"jobs": 1}), out, resume=True)  # runs made in parallel, read back
    assert {path: path.read_text() for path in kept} == kept
    assert again["by_domain"]["code"]["ga"]["u_mia"] == results["by_domain"]["code"]["ga"]["u_mia"]


def test_a_resumed_shadow_left_non_finite_is_not_scored(study, tmp_path):
    from lethe.errors import TrainingDiverged
    from lethe.unlearning.shadows import deal_shadows
    from lethe.unlearning.study import cell_config

    out, config, _ = study
    shadows = deal_shadows(config.model, config.data, "code", config.u_mia, tmp_path / "u_mia", config.unlearn.chunk,
                           config.unlearn.eval.batch_tokens, {})
    diverged = tmp_path / "u_mia" / "unlearned" / "ga" / "shadow-0"  # what a finished, non-finite run leaves
    diverged.mkdir(parents=True)
    (diverged / "run.json").write_text(json.dumps({"status": "done"}))
    (diverged / "results.json").write_text(json.dumps({"diverged": True}))
    with pytest.raises(TrainingDiverged, match="shadow 0"):
        shadows.unlearn_shadow("ga", cell_config(config, "code", "ga"), None, 0)
    assert not (diverged / "candidates").exists()


@pytest.mark.parametrize("shadows", ["3", "2"])
def test_a_bad_number_of_shadows_is_one_line(shadows, code_micro, data_dir, tmp_path, capsys):
    assert main(["experiment", "unlearning", "--model", str(code_micro), "--data", str(data_dir), "--set",
                 f"u_mia.shadows={shadows}", "--out", str(tmp_path / "study")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "u_mia.shadows must be 0 (off) or an even number" in error


@pytest.mark.slow
def test_eval_unlearning_repeats_the_study_rows(study, code_micro, data_dir, capsys):
    """`lethe eval unlearning` trains its own shadows with the unlearning run's method and settings: on the study's
    cell they are the study's shadows again (same recipe, seed and halves), so every row's numbers agree."""
    out, _, results = study
    evaluated = out.parent / "eval"
    assert main(["eval", "unlearning", "--model", str(out / "runs" / "code" / "ga"), "--original", str(code_micro),
                 "--retrained", str(out / "retrain" / "code"), "--data", str(data_dir), "--domain", "code",
                 "--set", "u_mia.shadows=4", "--set", "eval.blind=null", "--out", str(evaluated)]) == 0
    assert "U-MIA AUC" in capsys.readouterr().out
    found = json.loads((evaluated / "results.json").read_text())
    rows = results["by_domain"]["code"]
    for who, row in (("unlearned", rows["ga"]), ("original", rows["original"]), ("retrained", rows["retrained"])):
        for key in ("auc", "detected_share", "offline_auc"):
            assert found[who]["u_mia"][key] == pytest.approx(row["u_mia"][key], abs=1e-6), (who, key)
    assert (evaluated / "u_mia" / "attack" / "unlearned.json").is_file()


@pytest.mark.parametrize("sigma_in", [0.5, 1.0, 2.0])  # LR opening downward, linear, upward
def test_a_records_p_value_is_the_share_of_out_models_scoring_it_as_in_like(sigma_in):
    from lethe.attacks.per_example import lira_online_pvalue, lira_online_score

    target, mu_in, mu_out, sigma_out = np.array([-2.6, -3.0, -3.9]), -2.8, -3.2, 1.0
    draws = np.random.default_rng(1).normal(mu_out, sigma_out, 400_000)
    ratio = lira_online_score(draws, mu_in, sigma_in, mu_out, sigma_out)
    expected = [(ratio >= lira_online_score(s, mu_in, sigma_in, mu_out, sigma_out)).mean() for s in target]
    assert lira_online_pvalue(target, mu_in, sigma_in, mu_out, sigma_out) == pytest.approx(expected, abs=3e-3)


@pytest.mark.slow
def test_shadows_of_a_target_run_continue_its_base_model(code_micro, data_dir, tmp_path):
    """A `lethe target` model: each shadow is its base model continued on retain + its half of the candidates."""
    data = ["--data", str(data_dir)]
    assert main(["target", "--model", str(code_micro), *data, "--set", "forget=[code/forget]", "--set",
                 "retain=[code/retain]", "--set", "train.epochs=1", "--out", str(tmp_path / "target")]) == 0
    assert main(["unlearn", "--model", str(tmp_path / "target"), *data, "--domain", "code", "--method", "ga",
                 "--set", "train.lr=1e-3", "--set", "train.max_steps=2", "--out", str(tmp_path / "ga")]) == 0
    assert main(["eval", "unlearning", "--model", str(tmp_path / "ga"), "--original", str(tmp_path / "target"),
                 "--retrained", str(tmp_path / "target" / "retrain"), *data, "--domain", "code", "--set",
                 "u_mia.shadows=4", "--set", "eval.blind=null", "--out", str(tmp_path / "eval")]) == 0
    where = tmp_path / "eval" / "u_mia"
    manifest = json.loads((where / "references.json").read_text())
    target = json.loads((tmp_path / "target" / "results.json").read_text())["target"]
    for k, kept in enumerate(manifest["keep"]):
        shadow = json.loads((where / "shadows" / f"shadow-{k}" / "results.json").read_text())
        assert shadow["train"]["splits"] == target["splits"] == ["code/forget", "code/retain"]
        assert set(shadow["members"]["code/forget"]) == {r for r, k_ in zip(manifest["records"], kept, strict=True)
                                                         if k_}
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {"auc", "detected_share", "auc_minus_retrain"} <= set(results["unlearned"]["u_mia"])
