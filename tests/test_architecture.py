"""docs/architecture.md's worked examples are real: the command it shows is the file in the repo and runs end to
end; the attack it shows, registered as written, runs inside `lethe attack mia`."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import lethe
from lethe.cli import build_parser, main
from lethe.config.reference import commands, render_config_reference

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC, flags=re.S)


def _block_with(marker: str) -> str:
    found = [block for block in _python_blocks() if marker in block]
    assert len(found) == 1, f"docs/architecture.md should show one example with {marker!r}"
    return found[0]


def test_the_command_example_is_the_file_in_the_repo():
    assert _block_with('recipe(command="eval bpb"') == (ROOT / "lethe" / "recipes" / "eval_bpb.py").read_text()


def test_a_command_is_derived_everywhere_from_its_one_file():
    assert "lethe eval bpb" in ", ".join(commands()) and "`lethe eval bpb`" in render_config_reference()
    assert callable(lethe.eval_bpb) and "eval_bpb" in lethe.__all__
    evaluate = build_parser()._subparsers._group_actions[0].choices["eval"]
    assert "bpb" in evaluate._subparsers._group_actions[0].choices


def test_the_new_command_runs_and_agrees_with_eval_ppl(micro_run, data_dir, tmp_path, capsys):
    common = ["--model", str(micro_run), "--data", str(data_dir), "--splits", "books/forget"]
    assert main(["eval", "bpb", *common, "--out", str(tmp_path / "bpb")]) == 0
    assert "bits/byte" in capsys.readouterr().out
    assert main(["eval", "ppl", *common, "--out", str(tmp_path / "ppl")]) == 0
    bpb = json.loads((tmp_path / "bpb" / "results.json").read_text())
    ppl = json.loads((tmp_path / "ppl" / "results.json").read_text())
    tokens, size = bpb["tokens"]["books/forget"], bpb["bytes"]["books/forget"]
    assert tokens == ppl["splits"]["books/forget"]["tokens"]
    # same scoring pass: total nats = tokens · ln(ppl), spread over the bytes those tokens spell
    expected = tokens * math.log(ppl["ppl"]["books/forget"]) / math.log(2) / size
    assert bpb["bits_per_byte"]["books/forget"] == pytest.approx(expected, rel=1e-9)
    per_chunk = json.loads((tmp_path / "bpb" / "scores" / "books" / "forget.bytes.json").read_text())
    assert sum(per_chunk.values()) == size and 2 < size / tokens < 8  # English BPE: a few bytes per token
    assert main(["report", str(tmp_path / "bpb")]) == 0
    report = (tmp_path / "bpb" / "report.md").read_text()
    assert f"| books/forget | {bpb['bits_per_byte']['books/forget']:.3f} |" in report


def test_the_attack_example_runs_inside_attack_mia(micro_run, data_dir, tmp_path, monkeypatch):
    from lethe.attacks import membership
    from lethe.attacks.mia_suite import load_sample_scores, run_mia
    from lethe.config import MiaConfig
    from lethe.scoring import TokenScores

    monkeypatch.setattr(membership.attacks, "_entries", dict(membership.attacks._entries))  # undone after the test
    exec(_block_with('@attack("top1_rate")'), vars(membership).copy())
    config = MiaConfig(model=str(micro_run), members="books/forget", nonmembers="books/approximate", data=data_dir,
                       attacks=["loss", "top1_rate"], bootstrap=50, blind={"permutations": 10})
    results = run_mia(config, tmp_path / "mia")
    saved = load_sample_scores(tmp_path / "mia")["top1_rate"]
    labels = np.r_[np.ones(len(saved["members"])), np.zeros(len(saved["nonmembers"]))]
    assert results["attacks"]["top1_rate"]["auc"] == pytest.approx(
        roc_auc_score(labels, np.r_[saved["members"], saved["nonmembers"]]))
    members = TokenScores.load(tmp_path / "mia" / "scores" / "members")
    hand = [members.sample(i, "correct").mean() for i in range(len(members))]
    np.testing.assert_allclose(saved["members"], hand)


def test_the_method_example_computes_its_loss_and_unlearns(micro_run, data_dir, tmp_path, monkeypatch):
    import torch

    from lethe.config import MethodArgs, UnlearnConfig
    from lethe.engine.losses import Prediction
    from lethe.errors import LetheError
    from lethe.unlearning import methods as module

    monkeypatch.setattr(module.methods, "_entries", dict(module.methods._entries))  # undone after the test
    namespace = vars(module).copy()
    exec("from pydantic import Field\n" + _block_with('@methods.register("ga_ceiling")'), namespace)
    method = namespace["CappedGradientAscent"](module.MethodContext(reference=None), MethodArgs(ga_ceiling=2.0))
    assert method.args.ga_ceiling == 2.0 and method.groups == ("forget", "retain")

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11) * 3
    labels = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, -100, -100]])
    batch = {"labels": labels, "input_ids": labels.clamp(min=0), "attention_mask": (labels != -100).long()}
    logp = torch.log_softmax(logits, -1)
    hand = [min(-logp[b, t, labels[b, t + 1]].item(), 2.0) for b in range(2) for t in range(4) if labels[b, t + 1] >= 0]
    assert method.forget_loss(Prediction(computed_logits=logits), batch).item() == pytest.approx(
        -sum(hand) / len(hand), rel=1e-6)

    with pytest.raises(LetheError, match="ga_cieling"):
        lethe.resolve(UnlearnConfig, {"model": "m", "method": "ga_ceiling", "method_args": {"ga_cieling": 3}})
    results = lethe.unlearn(UnlearnConfig(model=str(micro_run), data=data_dir, domain="books", method="ga_ceiling",
                                          method_args={"ga_ceiling": 6.0},
                                          train={"lr": 3e-3, "epochs": 1, "batch_size": 8, "warmup_ratio": 0}),
                            tmp_path / "unlearn")
    assert results["method"] == "ga_ceiling"
    assert results["after"]["ppl"]["forget"] > 1.5 * results["before"]["ppl"]["forget"]
    saved = (tmp_path / "unlearn" / "config.yaml").read_text()
    assert "ga_ceiling: 6.0" in saved
