"""`lethe screen`'s config: a release checked against the victim's own data before fine-tuning on it."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from lethe.config.base import DATA_HELP, MODEL_HELP, ChunkConfig, ModelLoading, Strict, default_data_dir


class ScreenConfig(Strict, ModelLoading):
    """`lethe screen`: does the release's loss on the private records differ from its loss on held-out records of the
    same kind (or, with a trusted model, does release − trusted)? Per-record p-values, a verdict, the flagged records.
    """

    model: str = Field(description="the release to screen: " + MODEL_HELP)
    private: str = Field(description="the private records a poisoner could target (split of `data` or "
                         "JSONL/text/parquet file)")
    held_out: str = Field(description="held-out records of the same kind, which no poisoner saw (e.g. the "
                          "validation set); disjoint from the private records; at least 20")
    trusted: str | None = Field(None, description="a model the release claims to be or derive from (e.g. the public "
                                "checkpoint), same tokenizer: then the score is the loss difference release − "
                                "trusted")
    data: Path = Field(default_factory=default_data_dir, description=DATA_HELP)
    alpha: float = Field(0.05, gt=0, lt=1, description="the verdict's false-positive rate, and the false-discovery "
                         "rate of the flagged records")
    tail: float = Field(0.1, gt=0, le=0.5, description="the tail test looks at the most extreme records up to this "
                        "share of the pooled records")
    permutations: int = Field(999, ge=99, description="label permutations of the tail test")
    storey_lambda: float = Field(0.5, gt=0, lt=1, description="λ of Storey's π0, the targeted-share estimate")
    chunk: ChunkConfig = Field(default_factory=lambda: ChunkConfig(max_chunks_per_doc=1),
                               description="one sample per record: its first chunk")
    batch_tokens: int = Field(4096, ge=64, description="tokens per scoring batch")
    seed: int = Field(0, description="seed of the tail test's permutations")
