"""Documents → fixed-length token chunks, each one example (Yao et al.: chunks under 5 tokens dropped)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lethe.config import ChunkConfig
from lethe.data.documents import Document
from lethe.errors import LetheError

log = logging.getLogger("lethe")


@dataclass(frozen=True)
class Chunk:
    id: str  # "<document id>#<chunk index>"
    doc_id: str
    input_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)


def document_of(chunk_id: str) -> str:
    """The document id of a chunk id (scores saved per chunk carry only the chunk's id)."""
    return chunk_id.rsplit("#", 1)[0]


def bos_prefix(tokenizer) -> list[int]:
    """[BOS] when the tokenizer puts its BOS token before every text it encodes (as Llama's do: the model was trained
    with it, and a sequence without it shifts every score), else []: Lethe's own BPE, GPT-2's and Qwen2's add none."""
    if tokenizer.bos_token_id is None:
        return []
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    special = tokenizer("a", add_special_tokens=True)["input_ids"]
    prefix = special[: len(special) - len(plain)]
    return prefix if prefix == [tokenizer.bos_token_id] and special[len(prefix):] == plain else []


def chunk_documents(documents: list[Document], tokenizer, config: ChunkConfig, context: int,
                    name: str = "the set") -> list[Chunk]:
    """Each document's chunks of `config.length` tokens; one too short for any chunk is left out, with a warning."""
    if config.length > context:
        raise LetheError(f"chunk length {config.length} is longer than the model's context of {context} tokens")
    encoded = tokenizer([doc.text for doc in documents], add_special_tokens=False)["input_ids"]
    bos = bos_prefix(tokenizer)  # every chunk is a sequence of its own, so each starts as the model expects
    if bos:
        log.debug("each chunk of %s starts with the tokenizer's BOS token (id %d)", name, bos[0])
    chunks, too_short = [], 0
    for doc, ids in zip(documents, encoded, strict=True):
        too_short += len(ids) < config.min_tokens
        starts = range(0, len(ids), config.length - len(bos))
        if config.max_chunks_per_doc is not None:
            starts = starts[: config.max_chunks_per_doc]
        for index, start in enumerate(starts):
            piece = ids[start:start + config.length - len(bos)]
            if len(piece) >= config.min_tokens:
                chunks.append(Chunk(f"{doc.id}#{index}", doc.id, tuple(bos + piece)))
    if too_short:
        log.warning("%d of the %d documents of %s are shorter than chunk.min_tokens (%d tokens) and are left out",
                    too_short, len(documents), name, config.min_tokens)
    return chunks


def chunk_splits(splits: dict[str, list[Document]], tokenizer, config: ChunkConfig,
                 context: int) -> dict[str, list[Chunk]]:
    chunked = {name: chunk_documents(docs, tokenizer, config, context, name) for name, docs in splits.items()}
    empty = [name for name, chunks in chunked.items() if not chunks]
    if empty:
        raise LetheError(f"split {empty[0]!r} has no chunk of at least {config.min_tokens} tokens")
    return chunked
