"""Bad input ends in one line that names the file or key and what to do, refused before anything runs; models that
are not whole or not finite are refused when loaded (issue 25, items 4 and 5)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from lethe.cli import main
from lethe.config import UnlearnConfig, parse_overrides, read_yaml, resolve
from lethe.errors import LetheError, explain
from lethe.models import load_model


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("lethe: error:")]
    assert len(errors) == 1, lines
    return errors[0]


def test_config_files_that_cannot_be_read_are_named(tmp_path):
    cases = {"latin1.yaml": (b"batch_tokens: 128 # caf\xe9\n", "not UTF-8 text"),
             "twice.yaml": (b"batch_tokens: 128\nbatch_tokens: 256\n", "'batch_tokens' is given twice at line 2")}
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(LetheError, match=message) as caught:
            read_yaml(tmp_path / name)
        assert str(tmp_path / name) in str(caught.value)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(LetheError, match="not a regular file"):  # reading it would block forever
        read_yaml(tmp_path / "fifo")
    with pytest.raises(LetheError, match="is a directory"):
        read_yaml(tmp_path)


def test_a_set_value_that_is_not_yaml_names_its_key():
    refusal = r"--set train\.lora\.target_modules: '\[q_proj' is not a YAML value"
    with pytest.raises(LetheError, match=refusal) as caught:
        parse_overrides(["train.lora.target_modules=[q_proj"])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("override", "key"), [
    ("train.seed=99999999999999999999", "train.seed"),
    ("train.seed=-1", "train.seed"),
    ("eval.mink_k=[0,500]", "eval.mink_k.0"),
    ("eval.mink_k=[]", "eval.mink_k"),
    ("pretrain_tokens=.nan", "pretrain_tokens"),
    ("pretrain_tokens=-5", "pretrain_tokens"),
    ("train.max_grad_norm=.inf", "train.max_grad_norm"),
    ("train.guard.max_loss=.inf", "train.guard.max_loss"),
    ("train.lr=inf", "train.lr"),
    ("train.epochs=1e30", "train.epochs"),  # the steps are capped again in the engine
])
def test_values_that_cannot_run_are_refused_at_config_time(override, key):
    with pytest.raises(LetheError, match=f"invalid config: {key}:"):
        resolve(UnlearnConfig, {"model": "m"}, parse_overrides([override]))


def test_infinity_stays_allowed_where_it_means_something():
    from lethe.config import MiaConfig

    chosen = resolve(MiaConfig, {"model": "m", "members": "a", "nonmembers": "b"}, parse_overrides(["gradnorm_p=.inf"]))
    assert chosen.gradnorm_p == float("inf")


@pytest.mark.parametrize(("argv", "message"), [(["--config", ""], "--config is empty"),
                                               (["--set", "splits=[]"], "invalid config: splits:")])
def test_empty_config_or_splits_are_refused(micro_run, data_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["eval", "ppl", "--model", str(micro_run), "--data", str(data_dir), "--out", str(out), *argv]) == 2
    assert message in error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("command", [["experiment", "unlearning"], ["sweep"], ["experiment", "leakage"]])
@pytest.mark.parametrize("jobs", ["two", "0", "1.5"])
def test_a_bad_number_of_jobs_is_one_line(command, jobs, micro_run, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*command, "--model", str(micro_run), "--data", str(data_dir), "--jobs", jobs, "--out", str(out)]) == 2
    assert "invalid config: jobs:" in error_line(capsys)
    assert not out.exists()


def test_out_paths_that_cannot_be_written(micro_run, data_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    cases = {str(tmp_path / "afile" / "run"): "a part of this path is a file",
             str(tmp_path / ("x" * 300)): "longer than the file system allows",
             "": "--out is empty",
             str(micro_run): f"--out {micro_run} is {micro_run}, which this command reads"}
    for out, message in cases.items():
        code = main(["eval", "ppl", "--model", str(micro_run), "--data", str(data_dir), "--splits", "code/forget",
                     "--out", out, "--overwrite"])
        line = error_line(capsys)
        assert code == 2 and message in line and "Error" not in line, line
    assert (micro_run / "model" / "config.json").is_file()  # --overwrite did not move the input aside


def test_os_errors_name_the_file_and_what_to_do():
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/model.safetensors")
    assert explain(full) == "/runs/x/model.safetensors: the disk is full; free space or choose another --out"
    assert "read-only" in explain(OSError(errno.EROFS, "Read-only file system", "/mnt/ro"))
    assert "already exists" in explain(FileExistsError(errno.EEXIST, "File exists", "/runs/x"))
    assert explain(RuntimeError("something new")) is None


def model_copy(micro_run, tmp_path, name: str):
    target = tmp_path / name
    shutil.copytree(micro_run / "model", target)
    return target


def edit_json(path, **changes):
    values = json.loads(path.read_text())
    values.update(changes)
    path.write_text(json.dumps(values))


def damage(micro_run, tmp_path):
    """Each way a model directory can be broken, and the words its refusal must hold."""
    weights = (micro_run / "model" / "model.safetensors").read_bytes()
    header = struct.unpack("<Q", weights[:8])[0]
    cases = {
        "truncated": (lambda d: (d / "model.safetensors").write_bytes(weights[: len(weights) // 2]), "damaged"),
        "empty": (lambda d: (d / "model.safetensors").write_bytes(b""), "damaged"),
        "huge_header": (lambda d: (d / "model.safetensors").write_bytes(struct.pack("<Q", 10**12) + weights[8:]),
                        "damaged"),
        "header_json": (lambda d: (d / "model.safetensors").write_bytes(weights[:8] + b"{" * header
                                                                         + weights[8 + header:]), "damaged"),
        "model_type": (lambda d: edit_json(d / "config.json", model_type="nope"), "model type"),
        "shapes": (lambda d: edit_json(d / "config.json", hidden_size=128), "shapes its config.json gives"),
        "more_layers": (lambda d: edit_json(d / "config.json", num_hidden_layers=4), "lack 18 parameter(s)"),
        "tokenizer_json": (lambda d: (d / "tokenizer.json").write_text("{nope"), "tokenizer.json is not valid JSON"),
        "added_tokens": (lambda d: edit_json_without(d / "tokenizer.json", "added_tokens"), "'added_tokens'"),
        "nan": (lambda d: poison_weights(d, float("nan")), "NaN or infinite"),
        "inf": (lambda d: poison_weights(d, float("inf")), "NaN or infinite"),
    }
    for name, (breaking, message) in cases.items():
        directory = model_copy(micro_run, tmp_path, name)
        breaking(directory)
        yield name, directory, message


def edit_json_without(path, key):
    values = json.loads(path.read_text())
    del values[key]
    path.write_text(json.dumps(values))


def poison_weights(directory, value):
    weights = load_file(directory / "model.safetensors")
    name = sorted(weights)[-1]
    weights[name].view(-1)[0] = value
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})


def test_models_that_are_damaged_not_whole_or_not_finite_are_refused(micro_run, tmp_path):
    for name, directory, message in damage(micro_run, tmp_path):
        with pytest.raises(LetheError, match=re.escape(message)) as caught:
            load_model(directory, device="cpu")
        assert str(directory) in str(caught.value), name
        assert "\n" not in str(caught.value)


def test_the_whole_finite_model_still_loads(micro_run):
    model, tokenizer = load_model(micro_run, device="cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters()) and len(tokenizer) > 0


def test_a_lora_target_the_model_lacks_names_the_key(micro_run, data_dir, tmp_path, capsys):
    code = main(["unlearn", "--model", str(micro_run), "--data", str(data_dir), "--out", str(tmp_path / "run"),
                 "--set", "train.lora.target_modules=[nope]", "--set", "train.max_steps=1",
                 "--set", "train.warmup_ratio=0"])
    line = error_line(capsys)
    assert code == 2 and "train.lora.target_modules" in line and "Error" not in line, line


def test_a_missing_tokenizer_from_and_a_resume_before_the_tokenizer_are_explained(data_dir, tmp_path, capsys):
    argv = ["pretrain", "--data", str(data_dir), "--set", "preset=micro", "--set",
            f"tokenizer_from={tmp_path / 'none'}", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert f"tokenizer_from {tmp_path / 'none'} does not exist" in error_line(capsys)
    assert main([*argv, "--resume"]) == 2
    assert "stopped before it saved its tokenizer" in error_line(capsys)


def test_an_interrupted_command_without_resume_is_not_told_to_resume(monkeypatch, micro_run, data_dir, tmp_path,
                                                                      capsys):
    def interrupted(self, args):  # a SIGTERM arrives mid-run (the CLI turns it into KeyboardInterrupt)
        raise KeyboardInterrupt

    monkeypatch.setattr("lethe.recipes.Recipe.execute", interrupted)
    assert main(["eval", "ppl", "--model", str(micro_run), "--out", str(tmp_path / "a")]) == 130
    assert "--resume" not in capsys.readouterr().err
    assert main(["pretrain", "--out", str(tmp_path / "b")]) == 130
    assert "--resume" in capsys.readouterr().err
