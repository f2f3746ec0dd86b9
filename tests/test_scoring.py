import numpy as np
import pytest
import torch

from lethe.config import ChunkConfig
from lethe.data.chunking import chunk_documents
from lethe.data.splits import load_splits
from lethe.scoring import TokenScores, length_buckets, score_chunks


@pytest.fixture(scope="module")
def chunks(micro_model, data_dir):
    _, tokenizer = micro_model
    docs = load_splits(data_dir, ["science/forget"])["science/forget"]
    # uneven lengths, so batches need padding and bucketing matters
    return chunk_documents(docs, tokenizer, ChunkConfig(length=48, max_chunks_per_doc=None), context=256)


def test_batched_scores_equal_one_chunk_at_a_time(micro_model, chunks):
    model, tokenizer = micro_model
    assert len({len(c) for c in chunks}) > 1
    scores = score_chunks(model, chunks, batch_tokens=200, pad_id=tokenizer.pad_token_id, progress=False)
    for i, chunk in enumerate(chunks):
        ids = torch.tensor([chunk.input_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
        targets = ids[0, 1:]
        probs = logp.exp()
        mean = (probs * logp).sum(-1)
        var = (probs * (logp - mean[:, None]) ** 2).sum(-1)
        np.testing.assert_allclose(scores.sample(i), logp[torch.arange(len(targets)), targets], atol=1e-4)
        np.testing.assert_allclose(scores.sample(i, "vocab_mean"), mean, atol=1e-4)
        np.testing.assert_allclose(scores.sample(i, "vocab_var"), var, atol=1e-3)
        np.testing.assert_array_equal(scores.sample(i, "correct"), (logp.argmax(-1) == targets).numpy())
        np.testing.assert_array_equal(scores.sample(i, "target_ids"), targets.numpy())


def test_perplexity_is_token_weighted_and_matches_the_model_loss(micro_model, chunks):
    model, tokenizer = micro_model
    scores = score_chunks(model, chunks, pad_id=tokenizer.pad_token_id, progress=False)
    total_nll, total_tokens = 0.0, 0
    for i, chunk in enumerate(chunks[:5]):
        ids = torch.tensor([chunk.input_ids])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss.item()
        assert scores.sample_nll()[i] == pytest.approx(loss, rel=1e-4)
    for i in range(len(chunks)):
        total_nll -= float(scores.sample(i).sum())
        total_tokens += len(chunks[i]) - 1
    assert scores.perplexity() == pytest.approx(np.exp(total_nll / total_tokens), rel=1e-5)
    assert scores.perplexity() != pytest.approx(scores.mean_sample_perplexity(), rel=1e-3)
    assert 0 < scores.accuracy() < 1


def test_scores_round_trip_through_disk(micro_model, chunks, tmp_path):
    model, tokenizer = micro_model
    scores = score_chunks(model, chunks, pad_id=tokenizer.pad_token_id, progress=False)
    scores.save(tmp_path / "forget")
    loaded = TokenScores.load(tmp_path / "forget")
    assert loaded.ids == scores.ids
    np.testing.assert_array_equal(loaded.logprob, scores.logprob)
    np.testing.assert_array_equal(loaded.offsets, scores.offsets)
    lines = (tmp_path / "forget.jsonl").read_text().splitlines()
    assert len(lines) == len(chunks)


def test_length_buckets_cover_every_index_within_budget():
    lengths = [5, 128, 64, 64, 7, 128, 33, 100, 2, 90]
    batches = length_buckets(lengths, batch_tokens=256)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[i] for i in b) <= 256 for b in batches)
    padding = sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)
    assert padding < 0.25 * sum(lengths)


def test_scores_without_vocabulary_statistics_keep_log_probs_and_refuse_min_k_pp(micro_model, chunks):
    from lethe.attacks import AttackInputs, attacks
    from lethe.errors import LetheError

    model, tokenizer = micro_model
    full = score_chunks(model, chunks, pad_id=tokenizer.pad_token_id, progress=False)
    lean = score_chunks(model, chunks, pad_id=tokenizer.pad_token_id, progress=False, vocab_stats=False)
    np.testing.assert_array_equal(full.logprob, lean.logprob)
    np.testing.assert_array_equal(full.correct, lean.correct)
    assert np.isnan(lean.vocab_mean).all() and np.isnan(lean.vocab_var).all()
    with pytest.raises(LetheError, match="min_k_pp needs them"):
        attacks.get("min_k_pp")(AttackInputs(target=lean))


def test_scores_through_the_fused_head_equal_those_from_the_models_logits(micro_model, chunks, monkeypatch):
    import lethe.scoring

    model, tokenizer = micro_model
    fused = score_chunks(model, chunks, batch_tokens=200, pad_id=tokenizer.pad_token_id, progress=False)
    monkeypatch.setattr(lethe.scoring, "fused_head", lambda *_: (None, "off for the test"))
    plain = score_chunks(model, chunks, batch_tokens=200, pad_id=tokenizer.pad_token_id, progress=False)
    for name in ("logprob", "vocab_mean", "vocab_var"):
        np.testing.assert_allclose(getattr(fused, name), getattr(plain, name), atol=1e-5)
    np.testing.assert_array_equal(fused.correct, plain.correct)
    np.testing.assert_array_equal(fused.target_ids, plain.target_ids)
