"""Schemas of the offline assets and of `lethe data build`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from lethe.config.base import DOMAINS, GENERAL, Seed, Strict, default_data_dir
from lethe.run_paths import check_name, check_names


class SplitSizes(Strict):
    """Documents per split; every domain gets forget/retain/approximate, general text gets retain/eval."""

    forget: int = Field(24, ge=1)
    retain: int = Field(72, ge=1)
    approximate: int = Field(24, ge=1)
    general_retain: int = Field(72, ge=1)
    general_eval: int = Field(24, ge=1)


class DedupConfig(Strict):
    """Near-duplicate removal across every split (word n-gram overlap with documents already kept)."""

    ngram: int = Field(8, ge=2, description="word n-gram length for near-duplicate detection")
    threshold: float = Field(
        0.3, gt=0, le=1, description="drop a document when this fraction of its n-grams is already kept")


class DataBuildConfig(Strict):
    """`lethe data build`: corpora (or your files) → disjoint, deduplicated splits, deterministic by seed."""

    out: Path = Field(default_factory=default_data_dir, description="directory the splits are written to")
    domains: list[str] = Field(default_factory=lambda: list(DOMAINS),
        description="domains to split into forget/retain/approximate (built-in: code, science, books; any "
        "name given `sources`)")
    general: bool = Field(True, description="also build general/retain and general/eval")
    sources: dict[str, list[Path]] = Field(
        default_factory=dict,
        description="user documents per domain (JSONL, text or parquet with a `text` field; text, .py, .tex and "
        ".md files are one document each; glob patterns allowed; `hf:org/name[:config][@revision]?split=...&"
        "text_field=...` for a Hugging Face data set); a domain listed here uses only these files instead of the "
        "built-in corpus",
    )
    approximate_sources: dict[str, list[Path]] = Field(
        default_factory=dict,
        description="documents known to be unseen by the model (e.g. written after its training cutoff) that "
        "fill a domain's approximate split instead of its corpus")
    split_sources: dict[str, list[Path]] = Field(
        default_factory=dict,
        description="documents that fill one split (`domain/split`, e.g. news/forget) instead of being dealt from "
        "the domain's corpus: a benchmark's own forget/retain/holdout layout, often `hf:` data sets (configs/data/"
        "muse-news.yaml); a domain whose every split is given here needs no other source")
    seed: Seed = Field(0, description="shuffling seed: the same seed gives the same splits")
    sizes: SplitSizes = Field(default_factory=SplitSizes, description="documents per split")
    max_doc_chars: int | None = Field(3000, ge=100, description="truncate documents to this many characters")
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    report_tokenizer: str = Field("gpt2", description="tokenizer used to count tokens in the summary")

    @model_validator(mode="after")
    def _domains_name_folders(self) -> DataBuildConfig:
        # each domain becomes the folder <out>/<domain>/
        check_names(self.domains, "domain")
        if GENERAL in self.domains:
            raise ValueError(f"{GENERAL!r} is not a domain to split into forget/retain/approximate: it is the "
                             f"general text that `general: true` builds (its files go in sources.{GENERAL})")
        for key in ("sources", "approximate_sources"):
            for name in getattr(self, key):
                check_name(name, f"{key} domain")
        return self


class AssetsConfig(Strict):
    """`lethe assets`: the offline SmolLM2-135M model and the built-in corpora, cached under $LETHE_HOME."""

    model: bool = Field(True, description="convert SmolLM2-135M to a safetensors directory")
    corpora: list[str] = Field(default_factory=lambda: [*DOMAINS, GENERAL],
        description="domains whose corpus to collect")
    force: bool = Field(False, description="rebuild even what is cached")

