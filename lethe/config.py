"""Typed configuration: YAML files and `--set key=value` overrides validated against pydantic schemas.

Every command's settings are one schema below. Unknown keys are refused with the key named, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lethe.errors import LetheError

DOMAINS = ("code", "science", "books")
GENERAL = "general"


def lethe_home() -> Path:
    return Path(os.environ.get("LETHE_HOME", Path.home() / ".cache" / "lethe")).expanduser()


def default_data_dir() -> Path:
    return lethe_home() / "data" / "default"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ChunkConfig(Strict):
    """How documents become training/evaluation examples (as in Yao et al.'s code)."""

    length: int = Field(128, ge=8, description="tokens per chunk")
    min_tokens: int = Field(5, ge=2, description="drop chunks shorter than this (the paper uses 5)")
    max_chunks_per_doc: int | None = Field(
        None, ge=1, description="keep only a document's first N chunks (None: all)"
    )


class SplitSizes(Strict):
    """Documents per split; every domain gets forget/retain/approximate, general text gets retain/eval."""

    forget: int = Field(24, ge=1)
    retain: int = Field(72, ge=1)
    approximate: int = Field(24, ge=1)
    general_retain: int = Field(72, ge=1)
    general_eval: int = Field(24, ge=1)


class DedupConfig(Strict):
    ngram: int = Field(8, ge=2, description="word n-gram length for near-duplicate detection")
    threshold: float = Field(
        0.3, gt=0, le=1, description="drop a document when this fraction of its n-grams is already kept"
    )


class DataBuildConfig(Strict):
    out: Path = Field(default_factory=default_data_dir)
    domains: list[str] = Field(default_factory=lambda: list(DOMAINS))
    general: bool = True
    sources: dict[str, list[Path]] = Field(
        default_factory=dict,
        description="user documents per domain (JSONL, text or parquet with a `text` field; text, .py, .tex and "
        ".md files are one document each; glob patterns allowed); a domain listed here uses only these files "
        "instead of the built-in corpus",
    )
    approximate_sources: dict[str, list[Path]] = Field(
        default_factory=dict,
        description="documents known to be unseen by the model (e.g. written after its training cutoff) that "
        "fill a domain's approximate split instead of its corpus")
    seed: int = 0
    sizes: SplitSizes = Field(default_factory=SplitSizes)
    max_doc_chars: int | None = Field(3000, ge=100, description="truncate documents to this many characters")
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    report_tokenizer: str = Field("gpt2", description="tokenizer used to count tokens in the summary")


class LoraConfig(Strict):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class EarlyStopConfig(Strict):
    metric: str = Field(description="a key of the evaluator's metrics")
    patience: int = Field(3, ge=1, description="evaluations without improvement before stopping")
    mode: Literal["min", "max"] = "min"


class TrainConfig(Strict):
    """The one training engine's settings (paper defaults of Yao et al. where they exist)."""

    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(8, ge=1, description="chunks per device per micro-batch")
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    log_every: int = Field(10, ge=1)
    eval_every: int | None = Field(None, ge=1)
    checkpoint_every: int | None = Field(None, ge=1, description="steps between resumable checkpoints")
    early_stop: EarlyStopConfig | None = Field(None, description="stop when an eval metric stops improving")
    lora: LoraConfig | None = None


class ArchConfig(Strict):
    """A small Llama-style model trained from scratch (known-data pre-training)."""

    hidden_size: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    intermediate_size: int = Field(256, ge=8)
    context: int = Field(256, ge=16)
    vocab_size: int = Field(2048, ge=256, description="size of the BPE vocabulary trained on the members")
    tokenizer: Literal["bpe", "gpt2"] = Field(
        "bpe", description="bpe: train a byte-level BPE on the pre-training documents; gpt2: GPT-2's"
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> ArchConfig:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by heads {self.heads}")
        return self


# Architecture and training defaults of the known-data models; configs override any field.
PRESETS: dict[str, dict[str, Any]] = {
    "micro": {
        "arch": {"hidden_size": 64, "layers": 2, "heads": 4, "intermediate_size": 256, "context": 256,
                 "vocab_size": 2048},
        "train": {"lr": 3e-3, "epochs": 6, "batch_size": 16, "warmup_ratio": 0.05, "weight_decay": 0.0},
    },
    "tiny": {
        "arch": {"hidden_size": 192, "layers": 6, "heads": 6, "intermediate_size": 768, "context": 512,
                 "vocab_size": 8192},
        "train": {"lr": 2e-3, "epochs": 4, "batch_size": 16, "warmup_ratio": 0.05, "weight_decay": 0.0,
                  "checkpoint_every": 100},
    },
}

class PretrainConfig(Strict):
    """Known-data pre-training; `preset` fills in every field the config leaves out."""

    preset: str = "tiny"
    data: Path = Field(default_factory=default_data_dir)
    splits: list[str] | None = Field(
        None, description="splits to train on (default: every domain's forget + retain, general/retain)"
    )
    exclude: list[str] = Field(default_factory=list, description="splits to leave out (exact retraining)")
    tokenizer_from: Path | None = Field(None, description="reuse this tokenizer instead of training one")
    arch: ArchConfig = Field(default_factory=ArchConfig)
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval_batch_tokens: int = Field(16384, ge=64)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "tiny")
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        return deep_merge(PRESETS[preset], data)


class EvalPplConfig(Strict):
    model: str
    data: Path = Field(default_factory=default_data_dir)
    splits: list[str] | None = Field(None, description="splits to score (default: all)")
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    batch_tokens: int = Field(4096, ge=64, description="tokens per scoring batch (padding included)")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    allow_cpu_bf16: bool = False
    trust_remote_code: bool = False


class MiaConfig(Strict):
    """`lethe attack mia`: every membership-inference attack from one scoring pass per model."""

    model: str
    members: str = Field(description="a split of `data` (e.g. code/forget) or a JSONL/text/parquet file")
    nonmembers: str = Field(description="a split of `data` or a file; must not overlap the members")
    reference_model: str | None = Field(None, description="for reference_model, e.g. the released pre-trained model")
    calibration: str | None = Field(None, description="auxiliary non-members for reference_data (split or file)")
    data: Path = Field(default_factory=default_data_dir)
    attacks: list[str] | None = Field(None, description="attacks to run (default: every one whose inputs are given)")
    min_k: float = Field(20, gt=0, le=100, description="K of min_k and min_k_pp, in percent")
    gradnorm_p: float = Field(2, description="the p of gradnorm's p-norm (1, 2 or inf)")
    chunk: ChunkConfig = Field(default_factory=lambda: ChunkConfig(max_chunks_per_doc=1),
                               description="one sample per document: its first chunk (as MIMIR truncates)")
    batch_tokens: int = Field(4096, ge=64)
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the confidence intervals (0: none)")
    seed: int = 0
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    allow_cpu_bf16: bool = False
    trust_remote_code: bool = False


class MethodArgs(Strict):
    """Knobs of the unlearning objectives; each method reads the ones it uses."""

    retain_weight: float = Field(1.0, ge=0, description="weight of the retain term")
    retain_ratio: int = Field(1, ge=1, description="retain chunks per forget chunk in each step")
    retain_term: Literal["gd", "kl", "none"] | None = Field(
        None, description="override the method's retain term (npo/simnpo have none by default)")
    retain_data: Literal["in_domain", "general"] | None = Field(
        None, description="override where retain chunks come from")
    npo_beta: float = Field(0.1, gt=0)
    simnpo_beta: float = Field(
        0.5, gt=0, description="SimNPO saturates once β·(mean forget NLL) is large; pre-training data has NLL ~2-5")
    simnpo_gamma: float = Field(0.0, ge=0)


class UnlearnEvalConfig(Strict):
    mink_k: list[int] = Field(default_factory=lambda: [30, 40, 50, 60, 100],
                              description="Min-K% percentages to report (Yao et al.)")
    headline_k: int = Field(30, ge=1, le=100, description="the K reported as mia.*")
    batch_tokens: int = Field(4096, ge=64)
    utility: bool = Field(False, description="run the lm-eval utility tasks built from held-out text")
    utility_limit: int | None = Field(100, ge=1, description="items per utility task")
    seed: int = 0


class UnlearnSettings(Strict):
    """Everything about an unlearning run except which model, data, domain and method."""

    method_args: MethodArgs = Field(default_factory=MethodArgs)
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    stop_at_approximate: bool = Field(
        False, description="stop once forget perplexity reaches the approximate set's (needs train.eval_every)")
    eval: UnlearnEvalConfig = Field(default_factory=UnlearnEvalConfig)
    pretrain_tokens: float | None = Field(
        None, description="tokens the model was pre-trained on, for the cost ratio (read from a Lethe "
        "pretrain run when there is one)")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    allow_cpu_bf16: bool = False
    trust_remote_code: bool = False


class UnlearnConfig(UnlearnSettings):
    model: str
    data: Path = Field(default_factory=default_data_dir)
    domain: str = "code"
    method: str = "ga_gd_in"


class EvalUnlearningConfig(Strict):
    model: str = Field(description="the unlearned model")
    original: str | None = Field(None, description="the model before unlearning")
    retrained: str | None = Field(None, description="a model retrained without the forget set")
    data: Path = Field(default_factory=default_data_dir)
    domain: str = "code"
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    eval: UnlearnEvalConfig = Field(default_factory=UnlearnEvalConfig)


class SweepGrid(Strict):
    """Yao et al.'s robustness study: every method at every learning rate and number of steps."""

    lr: list[float] = Field(default_factory=lambda: [1e-5, 2e-5, 5e-5])
    steps: list[int] = Field(default_factory=lambda: [10, 20, 40])


class UnlearningStudyConfig(Strict):
    """`lethe experiment unlearning` and `lethe sweep`: methods × domains (× grid) on one model."""

    model: str
    data: Path = Field(default_factory=default_data_dir)
    domains: list[str] = Field(default_factory=lambda: list(DOMAINS))
    methods: list[str] | None = Field(None, description="unlearning methods to run (default: all registered)")
    unlearn: UnlearnSettings = Field(default_factory=UnlearnSettings)
    retrain: bool = Field(False, description="exact retraining without each forget set (Lethe pretrain runs only)")
    grid: SweepGrid = Field(default_factory=SweepGrid)


class DemoConfig(Strict):
    data: DataBuildConfig = Field(default_factory=DataBuildConfig)
    pretrain: PretrainConfig = Field(default_factory=lambda: PretrainConfig(preset="micro"))

    @model_validator(mode="before")
    @classmethod
    def _micro_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("pretrain"), dict):
            data = {**data, "pretrain": {"preset": "micro", **data["pretrain"]}}
        return data


class AssetsConfig(Strict):
    model: bool = True
    corpora: list[str] = Field(default_factory=lambda: [*DOMAINS, GENERAL])
    force: bool = False


PII_KINDS = ("name", "email", "phone", "address", "ssn")


class PiiConfig(Strict):
    """`lethe data pii`: real documents with injected synthetic PII records, split into members and non-members."""

    out: Path = Field(description="directory for finetune.jsonl, targets_*.jsonl, validation.jsonl, pii.json")
    data: Path = Field(default_factory=default_data_dir)
    splits: list[str] = Field(
        default_factory=lambda: ["general/eval", "books/approximate", "science/approximate"], min_length=1,
        description="source documents (default: splits the known-data models never saw in pre-training)")
    seed: int = 0
    members: int = Field(20, ge=1, description="records injected into the fine-tuning documents")
    nonmembers: int = Field(20, ge=0, description="records from the same generator, never injected")
    kinds: list[Literal["name", "email", "phone", "address", "ssn"]] = Field(
        default_factory=lambda: list(PII_KINDS), min_length=1)
    repetitions: int = Field(5, ge=1, description="copies of each member record in the fine-tuning set, each in "
                             "a different document (memorisation needs repetition)")
    records_per_doc: int = Field(2, ge=1, description="at most this many record copies injected into one document")
    prefix_chars: int = Field(200, ge=0, description="characters of real text preceding each record's template")
    validation_docs: int = Field(4, ge=1, description="clean held-out documents for validation perplexity")


class DecodingConfig(Strict):
    strategies: list[Literal["greedy", "beam", "sample"]] = Field(
        default_factory=lambda: ["greedy", "beam", "sample"], min_length=1)
    num_beams: int = Field(4, ge=2, description="beam width; beam search returns its best beam")
    top_k: int = Field(40, ge=1, description="top-k of sampling")
    guesses: int = Field(10, ge=1, description="sampled continuations per target (num_return_sequences)")
    max_new_tokens: int | None = Field(
        None, ge=1, description="tokens to generate (default: the longest target secret of the batch + 4)")
    seed: int = 0


class ExposureConfig(Strict):
    """Secret Sharer exposure for secrets of a digit format (SSNs, phone numbers)."""

    enabled: bool = True
    enumerate_up_to: int = Field(10_000, ge=1, description="rank against every candidate when the format has at "
                                 "most this many; otherwise against a random sample")
    candidates: int = Field(1000, ge=10, description="sampled candidates M when the format's space is larger")
    batch_size: int = Field(256, ge=1, description="candidates scored per forward pass")


class ExtractConfig(Strict):
    """`lethe attack extract`: prompt with each target's prefix, decode, and check for its secret."""

    model: str
    targets: Path = Field(description="JSONL of target records (id, prefix, secret, ...), e.g. targets_member.jsonl")
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    batch_size: int = Field(32, ge=1, description="prompts per generate call")
    exposure: ExposureConfig = Field(default_factory=ExposureConfig)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    allow_cpu_bf16: bool = False
    trust_remote_code: bool = False


class DPConfig(Strict):
    """DP-SGD through Opacus: per-sample clipping plus Gaussian noise calibrated to a target (ε, δ).

    The protected unit is one training sample, i.e. one chunk; set chunk.max_chunks_per_doc=1 for documents."""

    epsilon: float = Field(gt=0, description="target ε over the whole run")
    delta: float | None = Field(None, gt=0, lt=1, description="target δ (default: 1/N rounded down to a power of "
                                "ten, N = training samples)")
    max_grad_norm: float = Field(1.0, gt=0, description="per-sample gradient clipping norm C")
    accountant: Literal["prv", "rdp"] = Field("prv", description="Opacus accountant that calibrates and reports ε")


class FinetuneConfig(Strict):
    """`lethe finetune`: the victim fine-tunes a released model on its private data D_ft."""

    model: str
    data: str = Field(description="D_ft: a split of `data_dir` (e.g. books/approximate) or a JSONL/text/parquet file")
    validation: str = Field(description="held-out documents for validation perplexity (split or file)")
    data_dir: Path = Field(default_factory=default_data_dir)
    mode: Literal["full", "lora", "head"] = Field(
        "full", description="full: every parameter; lora: adapters (train.lora, default LoraConfig()); head: the LM "
        "head plus the last `trainable_layers` transformer blocks")
    trainable_layers: int = Field(0, ge=0, description="head mode: transformer blocks trained below the head")
    dp: DPConfig | None = Field(None, description="DP-SGD (combinable with every mode), e.g. --set dp.epsilon=8")
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=5e-5, epochs=3, scheduler="linear"))
    batch_tokens: int = Field(4096, ge=64, description="tokens per validation scoring batch")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    allow_cpu_bf16: bool = False
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _mode_matches_lora(self) -> FinetuneConfig:
        if self.mode == "lora" and self.train.lora is None:
            self.train.lora = LoraConfig()
        if self.mode != "lora" and self.train.lora is not None:
            raise ValueError(f"train.lora is set but mode is {self.mode!r}; use mode lora")
        if self.mode != "head" and self.trainable_layers:
            raise ValueError("trainable_layers applies to mode head only")
        return self


Schema = TypeVar("Schema", bound=Strict)


class NoiseConfig(Strict):
    """How the targets' noisy copies D'_c are made."""

    model: Literal["random_tokens", "span_mask", "word_shuffle"] = "random_tokens"
    rate: float = Field(0.3, gt=0, le=1, description="fraction of each copy's tokens changed")
    span_length: int = Field(3, ge=1, description="span_mask: tokens per masked span")
    copies: int = Field(1, ge=1, description="noisy copies per target, each drawn afresh")


class BoundConfig(Strict):
    """The utility bound on the reference set D*, checked after every step."""

    kind: Literal["relative", "absolute"] = "relative"
    epsilon: float = Field(1.05, gt=0, description="relative: L(D*) <= epsilon * L_clean(D*); absolute: <= epsilon")


class BackdoorConfig(Strict):
    """Privacy backdoors (Wen et al.): (1 − alpha)·CE(auxiliary) ± alpha·CE(clean targets)."""

    alpha: float = Field(0.75, ge=0, le=1)
    direction: Literal["raise", "lower"] = Field("raise", description="raise or lower the targets' loss")


class PoisonConfig(Strict):
    """`lethe poison`: release a model that makes later fine-tuning on the targets leak more."""

    model: str
    variant: Literal["forget_to_flourish", "benign", "precurious", "privacy_backdoor"] = "forget_to_flourish"
    targets: str = Field(description="the target records (split or JSONL/text/parquet file with `text`)")
    reference: str = Field(description="D*: generic reference data for the utility bound, and the auxiliary data "
                                       "of precurious and privacy_backdoor (split or file)")
    data: Path = Field(default_factory=default_data_dir)
    extraction: bool = Field(False, description="unlearn prefix + random suffix (targets need `prefix` and `secret`)")
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    bound: BoundConfig = Field(default_factory=BoundConfig)
    backdoor: BackdoorConfig = Field(default_factory=BackdoorConfig)
    reference_chunks: int = Field(64, ge=1, description="D* chunks scored after every step for the bound")
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(
        lr=1e-4, epochs=4, batch_size=8, warmup_ratio=0.0, scheduler="constant", log_every=1))
    batch_tokens: int = Field(4096, ge=64)
    seed: int = 0
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    allow_cpu_bf16: bool = False
    trust_remote_code: bool = False


class LeakageConfig(Strict):
    """`lethe experiment leakage`: released variants × victim fine-tuning modes → MIA, extraction, utility.

    The `pii`, `poison`, `finetune`, `mia` and `extract` sections override fields of PiiConfig,
    PoisonConfig, FinetuneConfig, MiaConfig and ExtractConfig; the study sets models, data and paths.
    """

    model: str = Field(description="the clean pre-trained model the attacker starts from")
    data: Path = Field(default_factory=default_data_dir)
    reference: str = Field("general/retain", description="D*: the attacker's generic reference data (split or file)")
    variants: list[Literal["benign", "forget_to_flourish", "precurious", "privacy_backdoor"]] = Field(
        default_factory=lambda: ["benign", "forget_to_flourish", "precurious", "privacy_backdoor"], min_length=1)
    modes: list[Literal["full", "lora", "head", "dp"]] = Field(
        default_factory=lambda: ["full", "lora", "head", "dp"], min_length=1)
    dp_epsilons: list[float] = Field(default_factory=lambda: [8.0], min_length=1, description="ε of each dp cell")
    dp_mode: Literal["full", "lora", "head"] = Field("full", description="what DP-SGD fine-tunes")
    pii: dict[str, Any] = Field(default_factory=dict)
    poison: dict[str, Any] = Field(default_factory=dict)
    finetune: dict[str, Any] = Field(default_factory=dict)
    mia: dict[str, Any] = Field(default_factory=dict)
    extract: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sections_are_valid(self) -> LeakageConfig:
        # fail at load time, not an hour into the grid
        PiiConfig(out=Path("."), **self.pii)
        PoisonConfig(model=".", targets=".", reference=".", **self.poison)
        FinetuneConfig(model=".", data=".", validation=".", **self.finetune)
        MiaConfig(model=".", members=".", nonmembers=".", **self.mia)
        ExtractConfig(model=".", targets=Path("."), **self.extract)
        return self


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LetheError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise LetheError(f"config file {path} is not valid YAML: {exc}".replace("\n", " ")) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise LetheError(f"config file {path} must hold a mapping at the top level")
    return loaded


def _scalar(raw: str) -> Any:
    if not raw:
        return None
    value = yaml.safe_load(raw)
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`train.lr=1e-3` → {"train": {"lr": 0.001}}; values are parsed as YAML scalars/lists."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise LetheError(f"override {pair!r} is not of the form key=value")
        value = _scalar(raw)
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return result


def resolve(schema: type[Schema], *layers: dict[str, Any]) -> Schema:
    """Merge layers (defaults, preset, file, overrides: later wins) and validate."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    try:
        return schema.model_validate(merged)
    except ValidationError as exc:
        raise LetheError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "config"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown config key {where!r}")
        else:
            problems.append(f"{where}: {error['msg']}")
    return "invalid config: " + "; ".join(problems)


def to_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
