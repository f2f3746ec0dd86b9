"""Disjoint, deterministic forget / retain / approximate / general splits, free of near-duplicates.

Both papers need non-members that are really unseen: Yao et al.'s approximate set stands in for
retraining, and every membership-inference AUC is only as honest as its non-members. So every
document is checked against all documents already placed (exact hash and word n-gram overlap)
before it is placed anywhere.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from lethe.config import GENERAL, DataBuildConfig
from lethe.data.documents import Document, check_disjoint, read_documents, write_documents
from lethe.errors import LetheError
from lethe.hub import is_hub_dataset, read_hub_documents

log = logging.getLogger("lethe")

MEMBER_SPLITS = ("forget", "retain")
_WORD = re.compile(r"\w+")


def default_training_splits(available: Iterable[str]) -> list[str]:
    """Members of known-data pre-training: every forget and retain split, never approximate or eval."""
    return [name for name in available if name.rsplit("/", 1)[1] in MEMBER_SPLITS]


def _shingles(text: str, n: int) -> set[int]:
    words = _WORD.findall(text.lower())
    grams = [" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))]
    return {int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest()) for gram in grams}


@dataclass
class DuplicateFilter:
    """Keeps the n-grams of every accepted document; rejects exact and near copies of them."""

    ngram: int
    threshold: float
    exact: set[str] = field(default_factory=set)
    seen: set[int] = field(default_factory=set)
    dropped_exact: int = 0
    dropped_near: int = 0

    def accept(self, text: str) -> bool:
        digest = hashlib.sha256(" ".join(text.split()).lower().encode()).hexdigest()
        if digest in self.exact:
            self.dropped_exact += 1
            return False
        shingles = _shingles(text, self.ngram)
        if len(shingles & self.seen) >= self.threshold * len(shingles):
            self.dropped_near += 1
            return False
        self.exact.add(digest)
        self.seen |= shingles
        return True


def _sizes(config: DataBuildConfig, domain: str) -> dict[str, int]:
    sizes = config.sizes
    if domain == GENERAL:
        return {"eval": sizes.general_eval, "retain": sizes.general_retain}
    # fill order: the two sets compared come first
    return {"forget": sizes.forget, "approximate": sizes.approximate, "retain": sizes.retain}


def _shuffled(documents: list[Document], config: DataBuildConfig, key: str) -> list[Document]:
    if config.max_doc_chars:
        documents = [replace(doc, text=doc.text[: config.max_doc_chars]) for doc in documents]
    order = sorted(documents, key=lambda doc: doc.id)
    random.Random(f"{config.seed}:{key}").shuffle(order)
    return order


def assign_splits(corpora: dict[str, list[Document]], config: DataBuildConfig,
                  given: dict[str, list[Document]] | None = None) -> tuple[dict[str, list[Document]], DuplicateFilter]:
    """Shuffle each domain by seed and deal documents into its splits, skipping duplicates.

    `given` documents of a split (`domain/split`: unseen documents for approximate, a benchmark's forget set) fill
    it instead of the domain's corpus; a copy of a document placed earlier is skipped there too."""
    dedup = DuplicateFilter(config.dedup.ngram, config.dedup.threshold)
    given = given or {}
    splits: dict[str, list[Document]] = {}
    for domain, documents in corpora.items():
        candidates = iter(_shuffled(documents, config, domain))
        for split, wanted in _sizes(config, domain).items():
            name = f"{domain}/{split}"
            key = f"{domain}:unseen" if split == "approximate" else f"{name}:given"  # approximate's, as it always was
            source = iter(_shuffled(given[name], config, key)) if name in given else candidates
            chosen = splits[name] = []
            for doc in source:
                if dedup.accept(doc.text):
                    chosen.append(doc)
                    if len(chosen) == wanted:
                        break
            if not chosen:
                raise LetheError(f"domain {domain!r} has no documents left for its {split} split "
                                 f"({len(documents)} documents in all); lower data.sizes or add data")
            if len(chosen) < wanted:
                log.warning("domain %r: only %d documents for %s (asked for %d)", domain, len(chosen), split, wanted)
    return splits, dedup


def expand(paths: Iterable[Path]) -> list[Path]:
    """Paths as given, with glob patterns (`lethe/**/*.py`) expanded in sorted order."""
    expanded = []
    for path in map(str, paths):
        if any(char in path for char in "*?[") and not is_hub_dataset(path):
            matches = sorted(Path().glob(path)) if not Path(path).is_absolute() else sorted(
                Path("/").glob(path.lstrip("/")))
            if not matches:
                raise LetheError(f"no file matches {path!r}")
            expanded += matches
        else:
            expanded.append(Path(path))
    return expanded


def read_all(paths: Iterable[Path], domain: str) -> list[Document]:
    return [doc for path in expand(paths) for doc in read_documents(path, domain)]


def built_domains(config: DataBuildConfig) -> list[str]:
    return list(config.domains) + ([GENERAL] if config.general else [])


def given_splits(config: DataBuildConfig) -> dict[str, list[Document]]:
    """The documents of the splits filled as given (split_sources, approximate_sources), by split name."""
    names = [f"{domain}/{split}" for domain in built_domains(config) for split in _sizes(config, domain)]
    if unknown := sorted(set(config.split_sources) - set(names)):
        raise LetheError(f"data.split_sources names {unknown[0]!r}, not a split being built (splits: "
                         f"{', '.join(names)})")
    paths = {f"{domain}/approximate": files for domain, files in config.approximate_sources.items()}
    return {name: read_all(files, name.split("/")[0]) for name, files in (paths | config.split_sources).items()}


def fully_given(config: DataBuildConfig) -> set[str]:
    """Domains whose every split is given: they need no corpus."""
    return {domain for domain in built_domains(config)
            if all(f"{domain}/{split}" in config.split_sources for split in _sizes(config, domain))}


def load_corpora(config: DataBuildConfig, corpus_files: dict[str, Path]) -> dict[str, list[Document]]:
    """User files for a domain replace the built-in corpus of that domain."""
    domains = built_domains(config)
    unknown = (set(config.sources) | set(config.approximate_sources)) - set(domains)
    if unknown:
        raise LetheError(f"data.sources names domains not being built: {', '.join(sorted(unknown))}")
    corpora = {domain: [] for domain in fully_given(config)}
    for domain in (domain for domain in domains if domain not in corpora):
        files = config.sources.get(domain) or ([corpus_files[domain]] if domain in corpus_files else [])
        if not files:
            raise LetheError(f"no documents for domain {domain!r}: run `lethe assets` or give data.sources.{domain}")
        corpora[domain] = read_all(files, domain)
    return corpora


def write_splits(out: Path, splits: dict[str, list[Document]]) -> dict[str, Path]:
    paths = {}
    for name, documents in splits.items():
        paths[name] = out / f"{name}.jsonl"
        write_documents(paths[name], documents)
    return paths


def find_splits(data_dir: Path) -> dict[str, Path]:
    """Splits present in a data directory made by `lethe data build` (or laid out the same way)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise LetheError(f"data directory {data_dir} does not exist (build one with `lethe data build`)")
    found = {f"{path.parent.name}/{path.stem}": path for path in sorted(data_dir.glob("*/*.jsonl"))}
    if not found:
        raise LetheError(f"{data_dir} holds no splits (<domain>/<split>.jsonl); build one with `lethe data build`")
    return found


def load_splits(data_dir: Path, names: Iterable[str] | None = None) -> dict[str, list[Document]]:
    """The documents of each named split (default: every split) of a `lethe data build` directory."""
    available = find_splits(data_dir)
    names = list(available) if names is None else list(names)
    missing = [name for name in names if name not in available]
    if missing:
        raise LetheError(f"{data_dir} has no split {missing[0]!r} (has: {', '.join(available)})")
    return {name: read_documents(available[name], name.split("/")[0]) for name in names}


def load_set(spec: str, data_dir: Path) -> tuple[list[Document], Path]:
    """A document set named by a file path, an `hf:` Hugging Face data set, or else by a split of the data directory."""
    if is_hub_dataset(spec):
        documents, cached = read_hub_documents(spec)
        return documents, cached  # the data's hash is that of the cached split it came from
    path = Path(spec)
    if path.is_file():
        return read_documents(path), path
    available = find_splits(data_dir) if Path(data_dir).is_dir() else {}
    if spec not in available:
        raise LetheError(f"{spec!r} is neither a file nor a split of {data_dir}")
    return load_splits(data_dir, [spec])[spec], available[spec]


def load_disjoint_sets(run, specs: dict[str, str], data_dir: Path, labels: tuple[str, str],
                       why: str) -> list[list[Document]]:
    """Two document sets (name → file or split), refused if they share a text (`labels` name them in the error),
    their files' hashes recorded in `run` under those names."""
    loaded = {name: load_set(spec, data_dir) for name, spec in specs.items()}
    (first, _), (second, _) = loaded.values()
    check_disjoint(first, second, labels, why)
    run.record_data({name: path for name, (_, path) in loaded.items()})
    return [documents for documents, _ in loaded.values()]
