import json
import math

import pytest
import torch

from lethe.config import ArchConfig, ChunkConfig, TrainConfig
from lethe.data.chunking import chunk_splits
from lethe.data.splits import load_splits
from lethe.engine import Trainer, objectives, token_cross_entropy
from lethe.errors import TrainingDiverged
from lethe.models import build_model

ARCH = ArchConfig(hidden_size=32, layers=1, heads=2, intermediate_size=64, context=64)


@pytest.fixture(scope="module")
def setup(micro_model, data_dir):
    _, tokenizer = micro_model
    splits = load_splits(data_dir, ["books/retain", "code/retain"])
    chunked = chunk_splits(splits, tokenizer, ChunkConfig(length=32, max_chunks_per_doc=2), context=64)
    full = [c for chunks in chunked.values() for c in chunks if len(c) == 32]
    return tokenizer, full


def fresh_model(tokenizer, seed=0):
    torch.manual_seed(seed)
    return build_model(ARCH, tokenizer)


def mean_loss(model, chunks):
    from lethe.engine.trainer import collate

    with torch.no_grad():
        return token_cross_entropy(model, collate(chunks, 0)).item()


def test_language_modeling_lowers_loss_on_real_text(setup):
    tokenizer, chunks = setup
    model = fresh_model(tokenizer)
    before = mean_loss(model, chunks)
    trainer = Trainer(model, objectives.get("lm")(), {"train": chunks}, TrainConfig(lr=1e-2, epochs=3, batch_size=8),
                      pad_id=tokenizer.pad_token_id)
    result = trainer.fit()
    assert result.steps == 3 * math.ceil(len(chunks) / 8)
    assert mean_loss(trainer.unwrapped_model(), chunks) < before - 0.75
    assert result.tokens == 3 * len(chunks) * 32


def test_gradient_accumulation_matches_a_larger_batch(setup):
    tokenizer, chunks = setup
    chunks = chunks[:16]
    weights = []
    for batch_size, accum in ((8, 1), (4, 2)):
        trainer = Trainer(fresh_model(tokenizer), objectives.get("lm")(), {"train": chunks},
                          TrainConfig(lr=1e-2, max_steps=2, batch_size=batch_size, grad_accum=accum, warmup_ratio=0),
                          pad_id=tokenizer.pad_token_id)
        trainer.fit()
        weights.append(trainer.unwrapped_model().state_dict())
    # each step moves a weight by up to lr = 1e-2; AdamW's division by √v turns a near-zero gradient's rounding (which
    # depends on how the tokens are split into micro-batches) into a step of either sign, so 1e-4 absolute, not 0
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, atol=1e-4, rtol=1e-4)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_uninterrupted_result(setup, tmp_path):
    tokenizer, chunks = setup
    config = TrainConfig(lr=3e-3, max_steps=8, batch_size=4, checkpoint_every=2, eval_every=1)

    calls = {"n": 0}

    def interrupting(model):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Interrupt
        return {}

    straight = Trainer(fresh_model(tokenizer), objectives.get("lm")(), {"train": chunks}, config,
                       pad_id=tokenizer.pad_token_id, checkpoint_dir=tmp_path / "straight")
    straight.fit()
    first = Trainer(fresh_model(tokenizer), objectives.get("lm")(), {"train": chunks}, config,
                    pad_id=tokenizer.pad_token_id, checkpoint_dir=tmp_path / "ckpt", evaluator=interrupting)
    with pytest.raises(Interrupt):
        first.fit()
    assert [p.name for p in (tmp_path / "ckpt").glob("step-*")] == ["step-000004"]
    resumed = Trainer(fresh_model(tokenizer, seed=99), objectives.get("lm")(), {"train": chunks}, config,
                      pad_id=tokenizer.pad_token_id, checkpoint_dir=tmp_path / "ckpt")
    result = resumed.fit(resume=True)
    assert result.steps == 8
    expected = straight.unwrapped_model().state_dict()
    for name, tensor in resumed.unwrapped_model().state_dict().items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=1e-5)


class NaNAtStep3:
    groups = ("train",)

    def __init__(self):
        self.calls = 0

    def __call__(self, model, batches):
        self.calls += 1
        loss = token_cross_entropy(model, batches["train"])
        if self.calls == 3:
            loss = loss * float("nan")
        return loss, {"loss": loss.item()}


def test_nan_loss_stops_and_keeps_the_last_good_weights(setup, tmp_path):
    tokenizer, chunks = setup
    config = TrainConfig(lr=3e-3, max_steps=6, batch_size=4)
    trainer = Trainer(fresh_model(tokenizer), NaNAtStep3(), {"train": chunks}, config,
                      pad_id=tokenizer.pad_token_id, checkpoint_dir=tmp_path)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 3"):
        trainer.fit()
    from transformers import AutoModelForCausalLM

    kept = AutoModelForCausalLM.from_pretrained(tmp_path / "last-good", use_safetensors=True)
    # the failing step never updated the weights: what was kept is the model after step 2
    assert trainer.step == 2
    assert all(torch.isfinite(p).all() for p in kept.parameters())
    for name, tensor in trainer.unwrapped_model().state_dict().items():
        torch.testing.assert_close(kept.state_dict()[name], tensor)


def test_lora_trains_adapters_only_and_merges_on_save(setup, tmp_path):
    from lethe.config import LoraConfig
    from lethe.models import save_model

    tokenizer, chunks = setup
    base = fresh_model(tokenizer)
    original = {k: v.clone() for k, v in base.state_dict().items()}
    config = TrainConfig(lr=1e-2, max_steps=4, batch_size=8, lora=LoraConfig(r=4, alpha=8))
    trainer = Trainer(base, objectives.get("lm")(), {"train": chunks}, config, pad_id=tokenizer.pad_token_id)
    trainer.fit()
    model = trainer.unwrapped_model()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    save_model(model, tokenizer, tmp_path / "merged")
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", use_safetensors=True)
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, original[k])]
    assert changed and all("proj" in k for k in changed)
    assert mean_loss(merged, chunks) < mean_loss(fresh_model(tokenizer), chunks)


def test_pretrain_runs_unchanged_under_accelerate_launch(data_dir, tmp_path, launch):
    out = tmp_path / "ddp"
    done = launch("pretrain", "--preset", "micro", "--data", str(data_dir), "--out", str(out),
                  "--set", "train.max_steps=6", "--set", "arch.vocab_size=512")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["train"]["processes"] == 2 and results["train"]["steps"] == 6
    assert json.loads((out / "run.json").read_text())["status"] == "done"


def test_early_stopping_ends_training_when_the_metric_stalls(setup):
    from lethe.config import EarlyStopConfig

    tokenizer, chunks = setup
    evaluations = iter([5.0, 4.0, 4.5, 4.2, 4.1, 1.0, 1.0])
    config = TrainConfig(lr=1e-3, max_steps=20, batch_size=4, eval_every=2,
                         early_stop=EarlyStopConfig(metric="gap", patience=3))
    trainer = Trainer(fresh_model(tokenizer), objectives.get("lm")(), {"train": chunks}, config,
                      pad_id=tokenizer.pad_token_id, evaluator=lambda model: {"gap": next(evaluations)})
    result = trainer.fit()
    # best at the 2nd evaluation (step 4); three evaluations without improvement later: step 10
    assert result.stopped == "early_stop" and result.steps == 10
    assert [h["eval/gap"] for h in result.history if "eval/gap" in h] == [5.0, 4.0, 4.5, 4.2, 4.1]
