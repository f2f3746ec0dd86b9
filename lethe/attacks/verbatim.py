"""MUSE's verbatim memorisation (Shi et al., 2024): prompted with the first tokens of a forget chunk, how much of
its true continuation does the model write back? ROUGE-L F1 between the greedy continuation and the truth,
here on tokens (one tokenizer for every model compared), averaged over chunks."""

from __future__ import annotations

from collections.abc import Sequence

from lethe.config import VerbmemConfig
from lethe.data.chunking import Chunk


def rouge_l_f1(candidate: Sequence[int], reference: Sequence[int]) -> float:
    """F1 of the longest common subsequence's precision (over the candidate) and recall (over the reference)."""
    if not candidate or not reference:
        return 0.0
    previous = [0] * (len(reference) + 1)
    for token in candidate:
        current = [0]
        for j, expected in enumerate(reference, start=1):
            current.append(previous[j - 1] + 1 if token == expected else max(previous[j], current[j - 1]))
        previous = current
    common = previous[-1]
    if common == 0:
        return 0.0
    precision, recall = common / len(candidate), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def verbatim_memorisation(model, tokenizer, chunks: list[Chunk], config: VerbmemConfig) -> dict:
    """Mean ROUGE-L F1 over the forget chunks long enough for prefix + continuation, and the per-chunk scores."""
    from lethe.attacks.extraction import generate_batched

    usable = [c for c in chunks if len(c) >= config.prefix_tokens + config.continuation_tokens]
    usable = usable[: config.max_chunks]
    if not usable:
        return {"rouge_l": None, "chunks": 0, "per_chunk": {}}
    prompts = [c.input_ids[: config.prefix_tokens] for c in usable]
    truths = [c.input_ids[config.prefix_tokens: config.prefix_tokens + config.continuation_tokens] for c in usable]
    guesses = generate_batched(model, prompts, [config.continuation_tokens] * len(usable),
                               pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                               kwargs={"do_sample": False}, batch_size=config.batch_size)
    per_chunk = {c.id: rouge_l_f1(guess[0], truth) for c, guess, truth in zip(usable, guesses, truths, strict=True)}
    return {"rouge_l": sum(per_chunk.values()) / len(per_chunk), "chunks": len(per_chunk), "per_chunk": per_chunk}
