"""Nothing in a run or model directory runs as code: checkpoints are checked against the hashes written with them
and nothing in them is unpickled; every tokenizer goes through the remote-code check."""

import json
import pickle
import shutil

import pytest
import torch

from lethe.config import ArchConfig, ChunkConfig, TrainConfig
from lethe.data.chunking import chunk_splits
from lethe.data.splits import load_splits
from lethe.engine import Trainer, objectives
from lethe.engine.checkpoints import STATE
from lethe.errors import LetheError
from lethe.models import build_model

ARCH = ArchConfig(hidden_size=32, layers=1, heads=2, intermediate_size=64, context=64)
CONFIG = TrainConfig(lr=3e-3, max_steps=6, batch_size=4, checkpoint_every=2, eval_every=1, scheduler="cosine")


class Touch:
    """A pickle that, once unpickled, creates a file: the shell command of a crafted checkpoint."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def chunks(micro_model, data_dir):
    _, tokenizer = micro_model
    chunked = chunk_splits(load_splits(data_dir, ["books/retain"]), tokenizer,
                           ChunkConfig(length=32, max_chunks_per_doc=2), context=64)
    return tokenizer, [c for c in chunked["books/retain"] if len(c) == 32]


def trainer(chunks, folder, evaluator=None, seed=0):
    tokenizer, data = chunks
    torch.manual_seed(seed)
    return Trainer(build_model(ARCH, tokenizer), objectives.get("lm")(), {"train": data}, CONFIG,
                   pad_id=tokenizer.pad_token_id, checkpoint_dir=folder, evaluator=evaluator)


def interrupted(chunks, folder):
    """A run stopped after its step-4 checkpoint."""
    calls = []

    def evaluator(model):
        calls.append(1)
        if len(calls) == 5:
            raise Interrupt
        return {}

    with pytest.raises(Interrupt):
        trainer(chunks, folder, evaluator).fit()
    [checkpoint] = folder.glob("step-*")
    return checkpoint


def test_a_checkpoint_holds_no_pickle_and_resumes_to_the_uninterrupted_weights(chunks, tmp_path):
    straight = trainer(chunks, tmp_path / "straight")
    straight.fit()
    checkpoint = interrupted(chunks, tmp_path / "ckpt")
    assert not list(checkpoint.glob("custom_checkpoint_*"))  # the schedule is JSON, not a pickle
    state = json.loads((checkpoint / STATE).read_text())
    assert state["scheduler"]["last_epoch"] == 4 and "model.safetensors" in state["files"]
    resumed = trainer(chunks, tmp_path / "ckpt", seed=99)
    assert resumed.fit(resume=True).steps == 6
    assert resumed.scheduler.get_last_lr() == straight.scheduler.get_last_lr()
    expected = straight.unwrapped_model().state_dict()
    for name, tensor in resumed.unwrapped_model().state_dict().items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=1e-5)


def test_a_crafted_pickle_in_a_checkpoint_runs_nothing(chunks, tmp_path):
    checkpoint = interrupted(chunks, tmp_path / "ckpt")
    touched = tmp_path / "touched"
    # Accelerate once unpickled a registered object's state from this file name on resume
    (checkpoint / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Touch(touched)))
    with pytest.raises(LetheError, match=r"files it did not write: custom_checkpoint_0\.pkl.*nothing in it was loaded"):
        trainer(chunks, tmp_path / "ckpt").fit(resume=True)
    assert not touched.exists()


def test_a_replaced_torch_file_is_refused_even_with_forged_hashes(chunks, tmp_path):
    """The hashes stop a changed file; the weights-only loader stops one whose hash was forged to match."""
    from lethe.runs import sha256_file

    checkpoint = interrupted(chunks, tmp_path / "ckpt")
    touched = tmp_path / "touched"
    optimizer = checkpoint / "optimizer.bin"
    torch.save({"state": Touch(touched)}, optimizer)  # torch.save pickles whatever it is given
    with pytest.raises(LetheError, match=r"changed or missing: optimizer\.bin"):
        trainer(chunks, tmp_path / "ckpt").fit(resume=True)
    state = json.loads((checkpoint / STATE).read_text())
    state["files"]["optimizer.bin"] = sha256_file(optimizer)
    (checkpoint / STATE).write_text(json.dumps(state))
    with pytest.raises(LetheError, match="not plain tensors"):
        trainer(chunks, tmp_path / "ckpt").fit(resume=True)
    assert not touched.exists()


def test_a_tokenizer_that_names_its_own_code_is_refused_before_transformers_sees_it(micro_run, data_dir, tmp_path,
                                                                                   capsys):
    """`tokenizer_from` (pretrain) and the leakage study's tokenizer skipped the remote-code check, so transformers
    asked `Do you wish to run the custom code? [y/N]` on a terminal."""
    from lethe.cli import main
    from lethe.config import LeakageConfig
    from lethe.leakage.study import tokenizer_of

    source = tmp_path / "custom"
    shutil.copytree(micro_run / "model", source)
    touched = tmp_path / "touched"
    (source / "custom_tokenizer.py").write_text(f"open({str(touched)!r}, 'w')\n")
    settings = json.loads((source / "tokenizer_config.json").read_text())
    settings["auto_map"] = {"AutoTokenizer": ["custom_tokenizer.CustomTokenizer", None]}
    (source / "tokenizer_config.json").write_text(json.dumps(settings))
    assert main(["pretrain", "--preset", "micro", "--data", str(data_dir), "--out", str(tmp_path / "p"),
                 "--set", f"tokenizer_from={source}"]) == 2
    assert "tokenizer_config.json names its own Python code (auto_map)" in capsys.readouterr().err
    with pytest.raises(LetheError, match="names its own Python code"):
        tokenizer_of(LeakageConfig(model=str(source)))
    assert not touched.exists()
