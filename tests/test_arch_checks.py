"""Checks that keep a number from being silently wrong on any architecture (issue 25, item 6): collapse judged on
absolute perplexity too, and third-party warnings kept out of the terminal."""

from __future__ import annotations

import torch

from lethe.config import ChunkConfig
from lethe.data.roles import RunData
from lethe.models import load_model
from lethe.scoring import score_chunks
from lethe.unlearning.evaluation import collapse

ROLES = ("forget", "retain", "approximate", "general")


def test_a_perplexity_ten_times_the_originals_is_collapse(micro_run, data_dir):
    """Gradient ascent at a high rate leaves confident, wrong predictions (forget perplexity ~1e5-1e10): far from
    uniform, so the entropy test alone called it forgetting."""
    model, tokenizer = load_model(micro_run, device="cpu")
    data = RunData.load(data_dir, "books", tokenizer, ChunkConfig(), 256)

    def scores():
        return {role: score_chunks(model, data.role_chunks(role), pad_id=tokenizer.pad_token_id, progress=False)
                for role in ROLES}

    original = scores()
    with torch.no_grad():
        model.model.norm.weight.mul_(40)  # every logit × 40: the same ranking, sharpened to near certainty
    broken = scores()
    vocabulary = model.config.vocab_size
    assert broken["forget"].perplexity() > 10 * original["forget"].perplexity()
    assert collapse(broken, vocabulary) is None  # not uniform
    reason = collapse(broken, vocabulary, original)
    assert reason is not None and "perplexity" in reason and "10× the original model's" in reason
    assert collapse(original, vocabulary, original) is None


def test_third_party_warnings_go_to_the_run_log_not_the_terminal(micro_run, data_dir, tmp_path, capsys):
    """LoRA through PEFT and transformers warns (a deprecation, at the pinned versions); the terminal shows Lethe's
    lines only, and log.txt keeps the warning."""
    import warnings

    from lethe.cli import main

    out = tmp_path / "lora"
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # pytest's own capture would otherwise take the warnings first
        assert main(["unlearn", "--model", str(micro_run), "--data", str(data_dir), "--domain", "books", "--method",
                     "ga", "--set", "train.lr=1e-4", "--set", "train.max_steps=2", "--set", "train.warmup_ratio=0",
                     "--set", "train.lora.r=2", "--set", "eval.blind=null", "--out", str(out)]) == 0
    assert "Warning" not in capsys.readouterr().err
    assert "py.warnings" in (out / "log.txt").read_text()


def test_bos_starts_every_chunk_where_the_tokenizer_adds_it(micro_run, data_dir):
    """A Llama-style tokenizer puts BOS before every text; the model was trained so, and chunks without it shift
    every score. Lethe's own BPE adds none, so micro/tiny chunks are unchanged."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from lethe.data.chunking import bos_prefix, chunk_documents
    from lethe.data.splits import load_splits

    plain = AutoTokenizer.from_pretrained(micro_run / "model")
    llama_like = AutoTokenizer.from_pretrained(micro_run / "model")
    llama_like.add_special_tokens({"bos_token": "<s>"})
    bos = llama_like.bos_token_id
    llama_like._tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    assert bos_prefix(plain) == [] and bos_prefix(llama_like) == [bos]

    documents = load_splits(data_dir, ["books/forget"])["books/forget"]
    config = ChunkConfig(length=32)
    without = chunk_documents(documents, plain, config, 256)
    with_bos = chunk_documents(documents, llama_like, config, 256)
    assert all(chunk.input_ids[0] != bos for chunk in without)
    assert all(chunk.input_ids[0] == bos and len(chunk) <= 32 for chunk in with_bos)
    # the same text, 31 tokens a chunk after its BOS
    first = [c for c in with_bos if c.doc_id == documents[0].id]
    assert [t for c in first for t in c.input_ids[1:]] == list(
        plain(documents[0].text, add_special_tokens=False)["input_ids"][: sum(len(c) - 1 for c in first)])
