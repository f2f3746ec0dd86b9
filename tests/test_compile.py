"""train.compile: the compiled training step computes what the eager one does, and the model saves as a plain one."""

import pytest
import torch

from lethe.config import ChunkConfig, TrainConfig
from lethe.data.chunking import chunk_documents
from lethe.data.splits import load_splits
from lethe.engine import Trainer
from lethe.engine.objectives import objectives


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_a_plain_model(micro_model, data_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    original, tokenizer = micro_model
    docs = load_splits(data_dir, ["code/retain"])["code/retain"]
    chunks = [c for c in chunk_documents(docs, tokenizer, ChunkConfig(length=32), context=256) if len(c) == 32][:12]

    def train(compile_model: bool):
        model = type(original)(original.config)
        model.load_state_dict(original.state_dict())
        config = TrainConfig(epochs=1, batch_size=4, lr=1e-3, warmup_ratio=0, log_every=1, compile=compile_model)
        trainer = Trainer(model, objectives.get("lm")(), {"train": chunks}, config, pad_id=tokenizer.pad_token_id)
        losses = [h["loss"] for h in trainer.fit().history]
        return losses, trainer.save_model(tmp_path / str(compile_model), tokenizer)

    eager_losses, eager = train(False)
    compiled_losses, compiled = train(True)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "True", use_safetensors=True)
    assert set(saved.state_dict()) == set(eager.state_dict())  # no torch.compile prefix in the saved weights
    for name, weight in saved.state_dict().items():
        torch.testing.assert_close(weight, eager.state_dict()[name], rtol=1e-3, atol=1e-5)
