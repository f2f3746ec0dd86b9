"""One run's data, read and chunked once: role → split → documents → chunks.

Yao et al.'s evaluation gives each split a role: the forget set, the retain set beside it, the approximate
set (unseen data of the same domain, standing in for retraining) and held-out general text. Training,
the early stop, scoring and the blind baseline all read the chunks of one `RunData`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from lethe.config import GENERAL, ChunkConfig
from lethe.data.chunking import Chunk, chunk_splits
from lethe.data.documents import Document
from lethe.data.splits import find_splits, load_splits
from lethe.errors import LetheError


def role_splits(domain: str) -> dict[str, str]:
    """Which data split plays which role in Yao et al.'s evaluation."""
    return {"forget": f"{domain}/forget", "retain": f"{domain}/retain", "approximate": f"{domain}/approximate",
            "general": f"{GENERAL}/eval"}


def retain_split(domain: str, retain_data: str) -> str:
    """Where a method's retain term reads from: the domain's own retain set or general text."""
    return role_splits(domain)["retain"] if retain_data == "in_domain" else f"{GENERAL}/retain"


def require_forget_set(data_dir: Path, domain: str) -> dict[str, Path]:
    """The splits of `data_dir`, once it is known to hold `domain`'s forget set."""
    available = find_splits(data_dir)
    if role_splits(domain)["forget"] not in available:
        domains = sorted({name.split("/")[0] for name in available})
        raise LetheError(f"{data_dir} has no forget set for domain {domain!r} (domains: {domains})")
    return available


@dataclass(frozen=True)
class RunData:
    """The documents and chunks of every role of one domain (and of any extra split a method trains on)."""

    domain: str
    splits: dict[str, str]  # role → split name
    documents: dict[str, list[Document]]  # split name → documents
    chunks: dict[str, list[Chunk]]  # split name → chunks

    @classmethod
    def load(cls, data_dir: Path, domain: str, tokenizer, chunk: ChunkConfig, context: int,
             extra_splits: Iterable[str] = ()) -> RunData:
        require_forget_set(data_dir, domain)
        splits = role_splits(domain)
        names = list(dict.fromkeys([*splits.values(), *extra_splits]))
        documents = load_splits(data_dir, names)
        return cls(domain, splits, documents, chunk_splits(documents, tokenizer, chunk, context))

    def role_documents(self, role: str) -> list[Document]:
        return self.documents[self.splits[role]]

    def role_chunks(self, role: str) -> list[Chunk]:
        return self.chunks[self.splits[role]]

    def forgetting_only(self, doc_ids: Iterable[str]) -> RunData:
        """The same data with the forget role narrowed to these documents: one deletion request."""
        wanted, name = set(doc_ids), self.splits["forget"]
        unknown = sorted(wanted - {doc.id for doc in self.documents[name]})
        if unknown:
            raise LetheError(f"forget_documents: {unknown[:3]} {'are' if len(unknown) > 1 else 'is'} not in {name}"
                             + (f" ({len(unknown)} unknown)" if len(unknown) > 3 else ""))
        return replace(self, documents={**self.documents, name: [d for d in self.documents[name] if d.id in wanted]},
                       chunks={**self.chunks, name: [c for c in self.chunks[name] if c.doc_id in wanted]})
