"""DP-SGD on the common causal-LM families: training completes within ε, and Opacus's per-sample gradients are exact.

Tiny random models of each family, real text through GPT-2's tokenizer. GPT-2 and GPT-Neo learn their
position embeddings: with the one (1, T) row of position ids they build by default, Opacus failed on them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from lethe.config import DPConfig, TrainConfig
from lethe.data.chunking import Chunk
from lethe.engine import Trainer, objectives
from lethe.engine.dp_sgd import make_private
from lethe.engine.trainer import collate
from lethe.models import gpt2_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64}
ARCHITECTURES = {
    "llama": TINY,
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
             "attn_pdrop": 0.0},
    "gpt_neo": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "attention_types": [[["global", "local"], 1]],
                "window_size": 16, "max_position_embeddings": 64, "embed_dropout": 0.0, "attention_dropout": 0.0,
                "resid_dropout": 0.0},
    "gpt_neox": TINY | {"attention_dropout": 0.0, "hidden_dropout": 0.0},
    "qwen2": TINY | {"num_key_value_heads": 1},  # grouped-query attention, as the released Qwen2 models have
}


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def chunks(tokenizer) -> list[Chunk]:
    """24 paragraphs of the documentation, each cut to at most 48 tokens: batches of unequal lengths."""
    texts = [p.strip() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
             for p in path.read_text().split("\n\n") if len(p.strip()) > 40]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    found = [Chunk(f"doc{i}#0", f"doc{i}", tuple(ids[:48])) for i, ids in enumerate(encoded)]
    assert len(found) >= 24
    return found[:24]


def tiny_model(model_type: str, tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    special = tokenizer.eos_token_id  # GPT-2's <|endoftext|>, the last id of the vocabulary
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), bos_token_id=special, eos_token_id=special,
                                  pad_token_id=special, **ARCHITECTURES[model_type])
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_dp_training_completes_within_its_budget(model_type, tokenizer, chunks):
    model = tiny_model(model_type, tokenizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = Trainer(model, objectives.get("lm_per_sample")(), {"train": chunks},
                      TrainConfig(lr=1e-3, epochs=1, batch_size=4, warmup_ratio=0), pad_id=tokenizer.pad_token_id,
                      dp=DPConfig(epsilon=8))
    assert len({len(c) for c in chunks}) > 4  # padded batches
    result = trainer.fit()
    assert result.steps == trainer.total_steps == 6 and result.stopped == "completed"
    assert trainer.privacy.summary()["steps"] == trainer.privacy.steps_planned == 6
    assert 7.9 < trainer.privacy.epsilon() <= 8
    after = dict(trainer.unwrapped_model().named_parameters())
    assert all(not torch.equal(after[name], tensor) for name, tensor in before.items())


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_per_sample_gradients_are_each_samples_own(model_type, tokenizer, chunks):
    """Opacus's grad_sample[i] against sample i's gradient computed alone, unpadded, on an untouched copy.

    With loss_reduction="mean" Opacus multiplies the backpropagated gradients by the batch size, so for
    lm_per_sample's mean over samples grad_sample[i] is the gradient of sample i's own loss, unscaled.
    """
    model = tiny_model(model_type, tokenizer)
    alone = copy.deepcopy(model).train()
    objective = objectives.get("lm_per_sample")()
    full = [c for c in chunks if len(c) == 48][:4]
    rows = [Chunk(c.id, c.doc_id, c.input_ids[:n]) for c, n in zip(full, (48, 31, 17, 6), strict=True)]
    expected = []
    for row in rows:
        alone.zero_grad()
        objective(alone, {"train": collate([row], tokenizer.pad_token_id)})[0].backward()
        expected.append({name: p.grad.clone() for name, p in alone.named_parameters()})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    _, _, private = make_private(model, optimizer, DPConfig(epsilon=8), samples=len(chunks), batch_size=len(rows),
                                 grad_accum=1, steps=1)
    try:
        objective(model, {"train": collate(rows, tokenizer.pad_token_id)})[0].backward()
        for name, param in model.named_parameters():
            assert param.grad_sample.shape == (len(rows), *param.shape), name
            for i in range(len(rows)):
                torch.testing.assert_close(param.grad_sample[i], expected[i][name], rtol=1e-4, atol=1e-6,
                                           msg=lambda m, name=name, i=i: f"{name}, sample {i}: {m}")
    finally:
        private.cleanup()
