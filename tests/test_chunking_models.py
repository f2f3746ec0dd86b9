import pytest

from lethe.config import ChunkConfig
from lethe.data.chunking import chunk_documents
from lethe.data.documents import Document
from lethe.errors import LetheError
from lethe.models import gpt2_tokenizer, load_model, resolve_model_path


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()


def test_gpt2_tokenizer_matches_gpt2(tokenizer):
    assert len(tokenizer) == 50257
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]


def test_chunks_are_fixed_length_and_short_tails_dropped(tokenizer, data_dir):
    from lethe.data.splits import load_splits

    docs = load_splits(data_dir, ["books/retain"])["books/retain"]
    config = ChunkConfig(length=32, min_tokens=5, max_chunks_per_doc=None)
    chunks = chunk_documents(docs, tokenizer, config, context=1024)
    total = sum(len(tokenizer(d.text)["input_ids"]) for d in docs)
    assert all(5 <= len(c) <= 32 for c in chunks)
    assert total - sum(len(c) for c in chunks) < 5 * len(docs)  # only sub-5-token tails are lost
    assert {c.doc_id for c in chunks} == {d.id for d in docs}
    capped = chunk_documents(docs, tokenizer, config.model_copy(update={"max_chunks_per_doc": 2}), context=1024)
    assert max(sum(c.doc_id == d.id for c in capped) for d in docs) == 2


def test_tail_under_min_tokens_is_dropped(tokenizer):
    doc = Document(id="d", text="one two three four five six seven eight nine ten eleven twelve")
    ids = tokenizer(doc.text)["input_ids"]
    chunks = chunk_documents([doc], tokenizer, ChunkConfig(length=len(ids) - 2, min_tokens=5), context=64)
    assert len(chunks) == 1 and chunks[0].id == "d#0"


def test_chunk_longer_than_context_is_refused(tokenizer):
    with pytest.raises(LetheError, match="longer than the model's context of 64"):
        chunk_documents([Document(id="d", text="x")], tokenizer, ChunkConfig(length=128), context=64)


def test_model_without_safetensors_is_refused(tmp_path, micro_run):
    (tmp_path / "config.json").write_text((micro_run / "model" / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(LetheError, match=r"no \.safetensors weights \(found pytorch_model.bin\)"):
        load_model(tmp_path)


def test_bf16_on_cpu_is_refused_unless_forced(micro_run):
    with pytest.raises(LetheError, match="slower than float32"):
        load_model(micro_run, dtype="bfloat16", device="cpu")
    model, _ = load_model(micro_run, dtype="bfloat16", device="cpu", allow_cpu_bf16=True)
    assert next(model.parameters()).dtype.is_floating_point and model.dtype.itemsize == 2


def test_unknown_model_names(tmp_path):
    with pytest.raises(LetheError, match="neither a directory nor a known alias"):
        resolve_model_path("no-such-model")
    with pytest.raises(LetheError, match="no config.json"):
        resolve_model_path(tmp_path)
