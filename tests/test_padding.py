"""The one padding function behind training, scoring, generation and candidate scoring."""

import pytest
import torch

from lethe.config import ChunkConfig
from lethe.data.chunking import Chunk, chunk_documents
from lethe.data.padding import pad_sequences
from lethe.data.splits import load_splits
from lethe.engine.trainer import collate


def test_right_and_left_padding_place_tokens_and_mask():
    ids, mask = pad_sequences([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_sequences([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long


@pytest.fixture(scope="module")
def uneven(micro_model, data_dir):
    _, tokenizer = micro_model
    docs = load_splits(data_dir, ["books/forget"])["books/forget"]
    chunks = chunk_documents(docs, tokenizer, ChunkConfig(length=40), context=256)
    lengths = (40, 29, 17, 8, 3)  # padding of many widths
    assert all(len(c) == 40 for c in chunks[:len(lengths)])
    return [list(c.input_ids[:n]) for c, n in zip(chunks, lengths, strict=False)]


@torch.no_grad()
def token_logprobs(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # positions count real tokens only, as generate() derives them from the mask of a left-padded batch
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_padded_batch_gives_each_sequence_its_log_probs_alone(micro_model, uneven, side):
    model, tokenizer = micro_model
    ids, mask = pad_sequences(uneven, tokenizer.pad_token_id, side=side)
    batched = token_logprobs(model, ids, mask)
    width = ids.shape[1]
    for row, tokens in enumerate(uneven):
        alone = token_logprobs(model, *pad_sequences([tokens], tokenizer.pad_token_id))[0]
        start = 0 if side == "right" else width - len(tokens)
        torch.testing.assert_close(batched[row, start:start + len(tokens) - 1], alone, rtol=0, atol=1e-5)


def test_training_batches_are_the_shared_padding_with_padding_ignored(micro_model, uneven):
    _, tokenizer = micro_model
    batch = collate([Chunk(str(i), str(i), tuple(t)) for i, t in enumerate(uneven)], tokenizer.pad_token_id)
    ids, mask = pad_sequences(uneven, tokenizer.pad_token_id)
    assert torch.equal(batch["input_ids"], ids) and torch.equal(batch["attention_mask"], mask)
    assert torch.equal(batch["labels"] == -100, mask == 0)
