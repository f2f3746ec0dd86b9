"""A run that fails loses nothing and says so: --overwrite keeps the old run aside until the new one finishes, a
failed run reads `failed` even on a full disk, and numbers that cannot be computed are flagged, never written as
non-standard JSON."""

import errno
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from lethe.cli import main
from lethe.training.pretrain import pretrain, pretrain_config


def digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def strict_json(path: Path):
    """What a standard JSON parser reads (Python's own accepts NaN and Infinity)."""
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_overwrite_keeps_the_finished_run_aside_when_the_new_one_diverges(micro_run, data_dir, tmp_path, capsys):
    """The divergence guard stopped the replacement after training started, and the old run was deleted."""
    old = shutil.copytree(micro_run, tmp_path / "m2")
    before = digest(old)
    assert main(["pretrain", "--preset", "micro", "--data", str(data_dir), "--out", str(old), "--overwrite",
                 "--set", "train.lr=1e6", "--set", "arch.vocab_size=512", "--set", "train.max_steps=40"]) == 2
    aside = tmp_path / ".m2.replaced"
    assert f"the run this one was to replace is kept in {aside}" in capsys.readouterr().err
    assert digest(aside) == before
    info = json.loads((old / "run.json").read_text())
    assert info["status"] == "failed" and info["replacing"] == ".m2.replaced"
    assert (old / "checkpoints" / "last-good" / "model.safetensors").is_file()


class FullDisk:
    """The disk fills at the `fills_at`-th checkpoint: it fails, and so does every JSON file written after."""

    def __init__(self, monkeypatch, fills_at: int):
        import tempfile

        from lethe.engine import trainer

        self.saves, self.full = 0, False
        real_save, real_mkstemp = trainer.save_checkpoint, tempfile.mkstemp

        def save(*args, **kwargs):
            self.saves += 1
            if self.saves == fills_at:
                self.full = True
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_save(*args, **kwargs)

        def mkstemp(*args, **kwargs):
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_mkstemp(*args, **kwargs)

        monkeypatch.setattr(trainer, "save_checkpoint", save)
        monkeypatch.setattr("lethe.runs.tempfile.mkstemp", mkstemp)


def overwrite_pretrain(data_dir, out):
    config = pretrain_config("micro", {"data": str(data_dir), "arch": {"vocab_size": 512},
                                       "train": {"max_steps": 6, "checkpoint_every": 2}})
    with pytest.raises(OSError, match="No space left"):
        pretrain(config, out, overwrite=True)


def test_a_full_disk_after_a_checkpoint_leaves_a_failed_run_and_the_old_one_aside(micro_run, data_dir, tmp_path,
                                                                                    monkeypatch):
    """With 3 MB free, a replacement failed mid-checkpoint: the old run was deleted and the new one read `running`."""
    old = shutil.copytree(micro_run, tmp_path / "m2")
    before = digest(old)
    FullDisk(monkeypatch, fills_at=2)
    overwrite_pretrain(data_dir, old)
    info = strict_json(old / "run.json")  # written over its own bytes: no room for a new file
    assert info["status"] == "failed" and "No space left" in info["error"]
    assert digest(tmp_path / ".m2.replaced") == before
    assert list((old / "checkpoints").glob("step-*/trainer_state.json"))  # the new run can be resumed


def test_a_full_disk_before_any_checkpoint_puts_the_old_run_back(micro_run, data_dir, tmp_path, monkeypatch):
    old = shutil.copytree(micro_run, tmp_path / "m2")
    before = digest(old)
    FullDisk(monkeypatch, fills_at=1)
    overwrite_pretrain(data_dir, old)
    assert digest(old) == before and sorted(p.name for p in tmp_path.iterdir()) == ["m2"]


def test_a_model_scored_at_infinite_perplexity_is_flagged_and_its_results_are_strict_json(micro_run, data_dir,
                                                                                         tmp_path, capsys):
    """Perplexities of `inf` were reported with `collapsed: false`, exit 0, and `Infinity` in results.json; a learning
    rate too small to move a weight left the model bit-identical without a word."""
    import torch

    from lethe.models import load_model, save_model

    model, tokenizer = load_model(micro_run)
    with torch.no_grad():
        model.model.norm.weight.mul_(1e4)  # logits ×1e4: per-token losses in the thousands, exp() of them is inf
    save_model(model, tokenizer, tmp_path / "sharp")
    out = tmp_path / "u"
    assert main(["unlearn", "--model", str(tmp_path / "sharp"), "--data", str(data_dir), "--domain", "books",
                 "--method", "ga", "--out", str(out), "--set", "train.lr=1e-30", "--set", "train.max_steps=2",
                 "--set", "train.guard.enabled=false"]) == 0
    printed = capsys.readouterr()
    results = strict_json(out / "results.json")
    assert results["diverged"] is True and "not finite on" in results["diverged_reason"]
    assert results["after"]["ppl"]["forget"] is None
    assert results["null_reasons"]["after.ppl.forget"] == "not a finite number (inf)"
    assert results["unchanged"] is True
    assert "ga diverged" in printed.err and "bit-identical" in printed.err
    assert "DIVERGED" in printed.out and "UNCHANGED" in printed.out
    for scores in (out / "scores").rglob("*.jsonl"):
        assert "Infinity" not in scores.read_text() and "NaN" not in scores.read_text(), scores
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0


def test_unlearning_at_learning_rate_1e3_is_flagged(micro_run, data_dir, tmp_path, capsys):
    out = tmp_path / "u"
    code = main(["unlearn", "--model", str(micro_run), "--data", str(data_dir), "--domain", "books", "--out",
                 str(out), "--set", "train.lr=1e3", "--set", "train.max_steps=6"])
    results = strict_json(out / "results.json") if (out / "results.json").is_file() else {}
    assert code != 0 or results.get("diverged") is True or results["after"]["collapsed"] is True
    assert json.loads((out / "run.json").read_text())["status"] == ("done" if code == 0 else "failed")
    assert results.get("unchanged") in (None, False)
