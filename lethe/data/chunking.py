"""Documents → fixed-length token chunks, each one example (Yao et al.: chunks under 5 tokens dropped)."""

from __future__ import annotations

from dataclasses import dataclass

from lethe.config import ChunkConfig
from lethe.data.documents import Document
from lethe.errors import LetheError


@dataclass(frozen=True)
class Chunk:
    id: str  # "<document id>#<chunk index>"
    doc_id: str
    input_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)


def chunk_documents(documents: list[Document], tokenizer, config: ChunkConfig, context: int) -> list[Chunk]:
    if config.length > context:
        raise LetheError(f"chunk length {config.length} is longer than the model's context of {context} tokens")
    encoded = tokenizer([doc.text for doc in documents], add_special_tokens=False)["input_ids"]
    chunks = []
    for doc, ids in zip(documents, encoded, strict=True):
        starts = range(0, len(ids), config.length)
        if config.max_chunks_per_doc is not None:
            starts = starts[: config.max_chunks_per_doc]
        for index, start in enumerate(starts):
            piece = ids[start:start + config.length]
            if len(piece) >= config.min_tokens:
                chunks.append(Chunk(f"{doc.id}#{index}", doc.id, tuple(piece)))
    return chunks


def chunk_splits(splits: dict[str, list[Document]], tokenizer, config: ChunkConfig,
                 context: int) -> dict[str, list[Chunk]]:
    chunked = {name: chunk_documents(docs, tokenizer, config, context) for name, docs in splits.items()}
    empty = [name for name, chunks in chunked.items() if not chunks]
    if empty:
        raise LetheError(f"split {empty[0]!r} has no chunk of at least {config.min_tokens} tokens")
    return chunked
