"""The unlearning study with its attacks (quantization, relearning, verbatim memorisation) and deletion requests
(sequential, growing) on the micro model: every reported number rebuilt from the files the run saved."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from lethe.config import UnlearningStudyConfig
from lethe.data.splits import load_splits
from lethe.scoring import TokenScores
from lethe.unlearning.study import run_experiment

pytestmark = pytest.mark.slow

SETTINGS = {"train": {"lr": 3e-3, "epochs": 2, "batch_size": 8, "warmup_ratio": 0}}
ATTACKS = {"quantize": [4], "quantize_group": 32, "relearn": {"steps": [2], "lr": 1e-3},
           "verbmem": {"prefix_tokens": 16, "continuation_tokens": 16}}
REQUESTS = {"sequential": 2, "growing": [0.5, 1.0], "methods": ["ga"]}


@pytest.fixture(scope="module")
def study(micro_run, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("holds") / "experiment"
    config = UnlearningStudyConfig(model=str(micro_run), data=data_dir, domains=["books"], methods=["ga", "npo"],
                                   unlearn=SETTINGS, retrain=True, requests=REQUESTS, **ATTACKS,
                                   jobs=2)  # two processes: the runs and attacks in parallel, read back in order
    return out, config, run_experiment(config, out)


def forget_ppl(scores_dir: Path, ids: set[str] | None = None) -> float:
    scores = TokenScores.load(scores_dir / "books" / "forget")
    return (scores.subset(ids) if ids is not None else scores).perplexity()


def test_every_model_has_each_attack_and_the_retrain_is_the_reference(study):
    out, _, results = study
    model_dirs = {"original": out / "original" / "books", "retrained": out / "retrain" / "books" / "unlearning_scores",
                  "ga": out / "runs" / "books" / "ga" / "scores" / "unlearned",
                  "npo": out / "runs" / "books" / "npo" / "scores" / "unlearned"}
    for who, scores in model_dirs.items():
        row = results["by_domain"]["books"][who]
        assert set(row["relearn"]) == {"forget_set", "retain_only"} and set(row["quantized"]) == {"int4"}
        assert row["quantized"]["int4"]["forget_ppl"] == pytest.approx(forget_ppl(scores / "attacks" / "int4"),
                                                                       rel=1e-12)
        assert row["quantized"]["int4"]["forget_ppl_ratio"] == pytest.approx(
            forget_ppl(scores / "attacks" / "int4") / forget_ppl(model_dirs["retrained"] / "attacks" / "int4"))
        per_chunk = json.loads((scores / "attacks" / "verbmem.json").read_text())
        assert row["verbmem"]["rouge_l"] == pytest.approx(np.mean(list(per_chunk.values())))
        assert row["retrain_distance"]["privleak"] == pytest.approx(
            (row["mia"]["auc"] - results["retrained"]["mia"]["auc"]) / results["retrained"]["mia"]["auc"])
    # the reference: the retrain against itself
    assert results["retrained"]["retrain_distance"]["privleak"] == 0
    assert results["retrained"]["retrain_distance"]["forget_quality"] == 1
    for method in ("ga", "npo"):
        kept = results[method]["quantized"]["int4"]["forgetting_kept"]
        rise = math.log(forget_ppl(model_dirs[method]) / forget_ppl(model_dirs["original"]))
        quantized_rise = math.log(forget_ppl(model_dirs[method] / "attacks" / "int4")
                                  / forget_ppl(model_dirs["original"] / "attacks" / "int4"))
        assert kept == pytest.approx(quantized_rise / rise)
        relearned = results[method]["relearn"]["forget_set"]
        # one domain: the study's row is the domain's, whole (a mean over domains keeps the numbers, not the curves)
        assert relearned == results["by_domain"]["books"][method]["relearn"]["forget_set"] and "curve" in relearned
    text = (out / "results.md").read_text()
    assert "does the forgetting hold?" in text and "| retrained |" in text.split("does the forgetting hold?")[1]
    from lethe.cli import main

    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "does the forgetting hold?" in report and "deletion requests" in report


def test_sequential_requests_partition_the_forget_set_and_each_starts_where_the_last_ended(study, data_dir):
    out, _, results = study
    requests = out / "requests" / "books" / "ga"
    first, second = (json.loads((requests / f"sequential-{i}" / "results.json").read_text()) for i in (1, 2))
    configs = [(requests / f"sequential-{i}" / "config.yaml").read_text() for i in (1, 2)]
    assert f"model: {requests / 'sequential-1'}" in configs[1]
    forget_ids = sorted(doc.id for doc in load_splits(data_dir, ["books/forget"])["books/forget"])
    asked = [yaml.safe_load(text)["forget_documents"] for text in configs]
    assert asked[0] + asked[1] == forget_ids and len(asked[0]) == 3
    rows = results["requests"]["books"]["ga"]["sequential"]
    original = out / "original" / "books"
    after_first = requests / "sequential-1" / "scores" / "whole_forget_set"
    chunk_ids = {c for c in TokenScores.load(original / "books" / "forget").ids if c.split("#")[0] in asked[0]}
    assert rows[0]["forget_ppl_rise"] == pytest.approx(
        math.log(forget_ppl(after_first, chunk_ids) / forget_ppl(original, chunk_ids)))
    # the request's own run measured the same documents: its forget perplexity is this one
    assert first["after"]["ppl"]["forget"] == pytest.approx(forget_ppl(after_first, chunk_ids), rel=1e-6)
    assert rows[1]["asked_so_far"]["documents"] == 6 and rows[1]["pending_forget_ppl_rise"] is None
    assert rows[0]["forget_ppl_rise"] > 0 and second["train"]["steps"] > 0
    growing = results["requests"]["books"]["ga"]["growing"]
    assert [row["documents"] for row in growing] == [3, 6] and growing[0]["tokens"] < growing[1]["tokens"]
    # the whole forget set is the study's own run of the method, not a second one
    assert not (requests / "growing-1").exists() and growing[1]["tokens"] == results["ga"]["cost"]["tokens"]
    assert "sequential and growing deletion requests" in (out / "results.md").read_text()


def test_a_resumed_study_attacks_nothing_twice(study):
    out, config, results = study
    saved = out / "runs" / "books" / "npo" / "scores" / "unlearned" / "attacks" / "attacks.json"
    stamp = saved.stat().st_mtime_ns
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    again = run_experiment(config.model_copy(update={"jobs": 1}), out, resume=True)  # runs made in parallel, read back
    assert saved.stat().st_mtime_ns == stamp
    assert json.loads(json.dumps(again)) == json.loads((out / "results.json").read_text())
    assert again["npo"]["quantized"] == results["npo"]["quantized"]
