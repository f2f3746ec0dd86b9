"""Schemas of the unlearning evaluations: `lethe eval unlearning`, `lethe experiment unlearning`, `lethe sweep`,
and the attacks on unlearning (quantization, relearning, verbatim memorisation) both of them run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from lethe.config.base import (
    DATA_HELP,
    DOMAINS,
    MODEL_HELP,
    UNLEARNING_METHODS,
    ChunkConfig,
    Seed,
    Strict,
    UnlearnEvalConfig,
    UnlearnSettings,
    default_data_dir,
)
from lethe.config.layers import deep_merge
from lethe.run_paths import check_names


class RelearnConfig(Strict):
    """The relearning attack: each model fine-tuned alike on part of the forget set, or on retain text only."""

    steps: list[Annotated[int, Field(strict=True, ge=1)]] = Field(default_factory=lambda: [5, 10, 20], min_length=1,
        description="step counts after which the held-out forget documents are scored")
    forget_fraction: float = Field(0.5, gt=0, lt=1, description="share of forget documents fine-tuned on (the rest "
                                   "are measured)")
    lr: float = Field(1e-4, gt=0, description="constant learning rate, no warm-up")
    batch_size: int = Field(4, ge=1)
    seed: Seed = 0


class VerbmemConfig(Strict):
    """MUSE's verbatim memorisation: greedy continuation of each forget chunk's prefix, ROUGE-L F1 to the truth."""

    prefix_tokens: int = Field(32, ge=1)
    continuation_tokens: int = Field(32, ge=1)
    max_chunks: int = Field(100, ge=1, description="forget chunks prompted (the first ones long enough)")
    batch_size: int = Field(16, ge=1)


class UMiaConfig(Strict):
    """The per-example unlearning MIA (U-LiRA; Hayes et al., 2024): K shadow models, each trained with the target's
    own recipe on its data with the forget split replaced by a random half of the candidates (the domain's forget and
    approximate documents, each in exactly K/2 shadows), then unlearned with the method under test on that half.

    Cost per shadow: one training run of the target's recipe (a `lethe pretrain` run's pre-training, or a `lethe
    target` run's continued training), shared by every method of a study, plus one `lethe unlearn` run per method
    and a scoring pass of the candidates; K shadows cost about K pre-trainings in all."""

    shadows: int = Field(8, ge=0, description="shadow models K: 0 (off) or an even number of at least 4, so that "
                         "every candidate document has K/2 shadows that saw it and K/2 that did not")
    seed: Seed = Field(0, description="seed of the halves the shadows are dealt")

    @model_validator(mode="after")
    def _even(self) -> UMiaConfig:
        if self.shadows and (self.shadows % 2 or self.shadows < 4):
            raise ValueError(f"u_mia.shadows must be 0 (off) or an even number of at least 4 (K/2 shadows on each "
                             f"side of every document), not {self.shadows}")
        return self


class UnlearningAttacks(BaseModel):
    """The attacks on unlearning, all off by default: the same keys in `eval unlearning` and the study (a mixin, as
    ModelLoading is: its fields are listed with each command's schema)."""

    quantize: list[Literal[4, 8]] = Field(default_factory=list, description="the quantization attack: also score "
        "each model with its linear layers rounded to these bits (round-to-nearest per group), e.g. [8, 4]")
    quantize_group: int = Field(128, ge=8, description="input columns per quantization group")
    relearn: RelearnConfig | None = Field(None, description="the relearning attack (None: skip it)")
    verbmem: VerbmemConfig | None = Field(None, description="verbatim memorisation of the forget set (None: skip)")
    u_mia: UMiaConfig | None = Field(None, description="the per-example unlearning MIA against shadow models (None "
                                     "or shadows 0: skip); needs a model from `lethe pretrain` or `lethe target`")

    def any_attack(self) -> bool:
        return bool(self.quantize) or self.relearn is not None or self.verbmem is not None

    def u_mia_shadows(self) -> int:
        return self.u_mia.shadows if self.u_mia is not None else 0

    def refuse_verbmem_longer_than(self, chunk: ChunkConfig, where: str) -> None:
        if self.verbmem and self.verbmem.prefix_tokens + self.verbmem.continuation_tokens > chunk.length:
            raise ValueError(f"verbmem.prefix_tokens + verbmem.continuation_tokens must fit in {where}.length "
                             f"({chunk.length} tokens)")


class EvalUnlearningConfig(Strict, UnlearningAttacks):
    """`lethe eval unlearning`: an unlearned model against the original and (optionally) a retrained one."""

    model: str = Field(description="the unlearned model")
    original: str | None = Field(None, description="the model before unlearning")
    retrained: str | None = Field(None, description="a model retrained without the forget set")
    data: Path = Field(default_factory=default_data_dir, description=DATA_HELP)
    domain: str = Field("code", description="whose forget set was unlearned")
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    eval: UnlearnEvalConfig = Field(default_factory=UnlearnEvalConfig)

    @model_validator(mode="after")
    def _verbmem_fits_a_chunk(self) -> EvalUnlearningConfig:
        self.refuse_verbmem_longer_than(self.chunk, "chunk")
        return self


class SweepGrid(Strict):
    """Yao et al.'s robustness study: every method at every learning rate and number of steps."""

    lr: list[Annotated[float, Field(strict=True, gt=0)]] = Field(
        default_factory=lambda: [1e-5, 2e-5, 5e-5], min_length=1, description="learning rates (`lethe sweep` only)")
    steps: list[Annotated[int, Field(strict=True, ge=1)]] = Field(default_factory=lambda: [10, 20, 40], min_length=1,
        description="optimiser steps (`lethe sweep` only)")


class RequestsConfig(Strict):
    """MUSE's sustainability and scalability: deletion requests that arrive one after another, and forget sets of
    growing size, each unlearned with the study's settings."""

    sequential: int = Field(0, ge=0, description="split the forget documents into this many requests, unlearned one "
                            "after another, each from the model the previous one left (0: skip; 1 is refused)")
    growing: list[Annotated[float, Field(strict=True, gt=0, le=1)]] = Field(default_factory=list,
        description="shares of the forget documents unlearned at once from the original model, e.g. [0.25, 0.5, 1]")
    methods: list[str] | None = Field(None, min_length=1, description="methods that answer the requests (default: "
                                      "the study's)")

    @model_validator(mode="after")
    def _several_requests(self) -> RequestsConfig:
        if self.sequential == 1:
            raise ValueError("sequential: 1 is the study itself; use 2 or more requests, or 0 to skip")
        return self

    def any_request(self) -> bool:
        return self.sequential > 1 or bool(self.growing)


class UnlearningStudyConfig(Strict, UnlearningAttacks):
    """`lethe experiment unlearning` and `lethe sweep`: methods × domains (× grid) on one model; the attacks on
    unlearning (quantize, relearn, verbmem) run on every method's model, the original and the retrain."""

    model: str = Field(description=MODEL_HELP)
    data: Path = Field(default_factory=default_data_dir, description=DATA_HELP)
    domains: list[str] = Field(default_factory=lambda: list(DOMAINS), min_length=1,
        description="domains whose forget sets are unlearned")
    methods: list[str] | None = Field(None, min_length=1,
        description="unlearning methods to run (default: all registered)")
    unlearn: UnlearnSettings = Field(default_factory=UnlearnSettings,
        description="settings shared by every unlearning run")
    method_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict,
        description="per method, keys of `unlearn` that its runs change, so each method runs at its own tuned recipe, "
        "e.g. rmu: {train: {lr: 3.0e-3, epochs: 3}, method_args: {rmu_alpha: 4}} (its shadows and requests too)")
    retrain: bool = Field(False, description="exact retraining without each forget set (Lethe pretrain runs only)")
    requests: RequestsConfig = Field(default_factory=RequestsConfig,
        description="MUSE's sequential and growing deletion requests (`lethe sweep` ignores them, and the attacks)")
    grid: SweepGrid = Field(default_factory=SweepGrid)
    jobs: int = Field(1, ge=1, exclude=True, description="independent runs (unlearning runs, the retrain, shadows, "
                      "attacked models) at once, one thread each (not saved: it changes no result)")

    @model_validator(mode="after")
    def _verbmem_fits_a_chunk(self) -> UnlearningStudyConfig:
        self.refuse_verbmem_longer_than(self.unlearn.chunk, "unlearn.chunk")
        check_names(self.domains, "domain")  # each names a folder of runs/ and original/
        check_names(self.methods or [], "method")
        for method in self.method_overrides:
            if method not in (self.methods or UNLEARNING_METHODS):
                raise ValueError(f"method_overrides names {method!r}, which the study does not run (methods: "
                                 f"{', '.join(self.methods or UNLEARNING_METHODS)})")
            UnlearnSettings.model_validate(self.settings_of(method))  # a bad key fails here, before any run
        return self

    def settings_of(self, method: str) -> dict[str, Any]:
        """`unlearn` as `method`'s runs use it: the shared settings with that method's overrides."""
        return deep_merge(self.unlearn.model_dump(), self.method_overrides.get(method, {}))
