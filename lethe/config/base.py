"""Typed configuration: YAML files and `--set key=value` overrides validated against pydantic schemas.

Every command's settings are one schema below. Unknown keys are refused with the key named, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from lethe.config.layers import deep_merge
from lethe.errors import LetheError

DOMAINS = ("code", "science", "books")
GENERAL = "general"


def lethe_home() -> Path:
    return Path(os.environ.get("LETHE_HOME", Path.home() / ".cache" / "lethe")).expanduser()


def default_data_dir() -> Path:
    return lethe_home() / "data" / "default"


# Field descriptions shared by many schemas (rendered into docs/config.md).
MODEL_HELP = ("a Hugging Face model directory with safetensors weights, a Lethe run holding model/, or an alias "
              "(smollm2-135m)")
DATA_HELP = "the directory of `lethe data build`, whose splits are named domain/split"
# the unlearning registry's names (lethe.unlearning.methods), kept here so that help text needs no torch import;
# tests/test_unlearning_methods.py checks the two agree
UNLEARNING_METHODS = ("ga", "random_label", "adversarial", "ga_gd_in", "ga_kl_in", "ga_gd_general", "ga_kl_general",
                      "npo", "simnpo", "rmu", "undo")
METHODS_HELP = ", ".join(UNLEARNING_METHODS[:-1]) + " or " + UNLEARNING_METHODS[-1]


# numpy and torch seed with an unsigned 32-bit integer: a seed outside would fail only when the run starts
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
# passes over the data: beyond this no run ends (epochs: 1e30 would count toward 1e30 × the steps of one); sweeps
# set 1e6 and let max_steps decide. The engine caps the total steps too (lethe.engine.trainer.MAX_STEPS)
MAX_EPOCHS = 1_000_000


class Strict(BaseModel):
    # NaN and ±inf are refused in every float (`.inf` as a bound would switch the bound off unannounced); a field
    # where infinity means something says so with Field(allow_inf_nan=True)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)  # which layer set each value (see resolve)

    @model_validator(mode="before")
    @classmethod
    def _keep_section_defaults(cls, data: Any) -> Any:
        """A section given as a mapping changes only the keys it names: the rest keep this schema's defaults for
        the section (attack mia's chunk.max_chunks_per_doc: 1), not the section class's generic ones."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, field in cls.model_fields.items():
            value = data.get(name)
            if isinstance(value, dict) and field.default_factory is not None:
                default = field.get_default(call_default_factory=True)
                if isinstance(default, BaseModel):
                    data[name] = deep_merge(default.model_dump(exclude_unset=True), value)
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _no_yes_no_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """A yes/no value where a number is expected is refused, rather than read as 1 or 0."""
        if isinstance(value, bool) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"must be a number, not {str(value).lower()}")
        return value


def _numeric(annotation: Any) -> bool:
    kinds = set(typing.get_args(annotation)) or {annotation}
    return bool(kinds & {int, float}) and bool not in kinds


class ModelLoading(BaseModel):
    """How a command loads its model's weights: one set of keys, mixed into every schema that loads a model."""

    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype the weights are loaded in; bfloat16/float16 are for GPUs")
    allow_cpu_bf16: bool = Field(
        False, description="allow bfloat16/float16 on a CPU, where it is hundreds of times slower than float32")
    trust_remote_code: bool = Field(False, description="run the model directory's own Python code (refused by default)")


class ChunkConfig(Strict):
    """How documents become training/evaluation examples (as in Yao et al.'s code)."""

    length: int = Field(128, ge=8, description="tokens per chunk")
    min_tokens: int = Field(5, ge=2, description="drop chunks shorter than this (the paper uses 5)")
    max_chunks_per_doc: int | None = Field(
        None, ge=1, description="keep only a document's first N chunks (None: all)")


class LoraConfig(Strict):
    """LoRA adapters through PEFT; merged into the weights when a model is saved."""

    r: int = Field(8, ge=1, description="rank of the adapters")
    alpha: int = Field(16, ge=1, description="scaling: the update is alpha / r · BA")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names that get adapters (PEFT's target_modules)")


class EarlyStopConfig(Strict):
    """Stop training when an evaluation metric has not improved for `patience` evaluations."""

    metric: str = Field(description="a key of the evaluator's metrics")
    patience: int = Field(3, ge=1, description="evaluations without improvement before stopping")
    mode: Literal["min", "max"] = Field("min", description="whether lower or higher is better")


class GuardConfig(Strict):
    """The divergence guard: training stops, keeping the last good weights, once a number leaves any sane range.
    A non-finite loss or gradient stops training even with the guard off."""

    enabled: bool = Field(True, description="off: only a non-finite loss or gradient stops training (results still "
                          "mark a collapsed model)")
    max_loss: float = Field(1e4, gt=0, description="stop when the loss's magnitude exceeds this (nats per token "
                            "for language modelling, where a uniform guess costs log(vocabulary))")
    max_grad_norm: float = Field(1e6, gt=0, description="stop when the gradient norm before clipping exceeds this")
    zero_grad_steps: int = Field(3, ge=1, description="stop after this many steps in a row with gradient norm 0: "
                                 "the model no longer learns anything (collapsed or disconnected)")


class TrainConfig(Strict):
    """The one training engine's settings (paper defaults of Yao et al. where they exist)."""

    epochs: float = Field(1.0, gt=0, le=MAX_EPOCHS, description="passes over the data (fractions allowed)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(8, ge=1, description="chunks per device per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimiser step")
    lr: float = Field(2e-5, gt=0, description="peak learning rate of AdamW")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="fraction of the steps spent warming up")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="learning-rate schedule after warm-up")
    max_grad_norm: float | None = Field(1.0, gt=0, description="global gradient clipping (None: off)")
    seed: Seed = Field(0, description="seed of initialisation, shuffling and dropout")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "no", description="Accelerate's autocast; bf16 on GPUs (refused on a CPU, where it is far slower)")
    gradient_checkpointing: bool = Field(
        False, description="recompute each block's activations in backward: far less memory, about a third more "
        "compute (Hugging Face models)")
    reference_model: Literal["same", "bf16", "cpu"] = Field(
        "same", description="the frozen original model of KL, NPO and adversarial unlearning: same (the trained "
        "model's device and dtype), bf16 (half its memory, GPUs only) or cpu (no device memory, slower steps)")
    memory_check: bool = Field(
        True, description="on a GPU, refuse a run whose memory estimate exceeds the free memory (false: only log it)")
    compile: bool = Field(False, description="torch.compile the model's training forward and backward; off by "
                          "default: on a 2-core CPU the tiny model's step was ~10% faster but compiling took "
                          "50-90 s (7 s with a warm cache), more than a short run saves; not with DP-SGD")
    fused_head: bool = Field(
        True, description="mean next-token losses from the final hidden states, block by block: the (tokens × "
        "vocabulary) logits and their gradient are never kept (checked on a few tokens first; models whose head is "
        "not a plain linear map, compiled runs, DP-SGD and sharded weights use the logits); false: always the logits")
    log_every: int = Field(10, ge=1, description="steps between log records")
    log_with: list[Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab",
                           "trackio"]] = Field(
        default_factory=list, description="also send the log records (losses, evaluations) to these Accelerate "
        "trackers, e.g. [tensorboard] (each its own package: pip install 'lethe-llm[tensorboard]'); TensorBoard "
        "writes into the run's trackers/")
    eval_every: int | None = Field(None, ge=1, description="steps between evaluations, for commands that evaluate")
    checkpoint_every: int | None = Field(None, ge=1, description="steps between resumable checkpoints")
    early_stop: EarlyStopConfig | None = Field(None, description="stop when an eval metric stops improving")
    lora: LoraConfig | None = Field(None,
        description="train LoRA adapters instead of every weight (e.g. --set train.lora.r=8)")
    guard: GuardConfig = Field(default_factory=GuardConfig, description="the divergence guard")

    @field_validator("log_with")
    @classmethod
    def _trackers_installed(cls, names: list[str]) -> list[str]:
        from lethe.engine.trackers import refuse_missing_packages

        try:
            refuse_missing_packages(names)
        except LetheError as exc:
            raise ValueError(str(exc).removeprefix("train.log_with names ")) from None
        return names


class ArchConfig(Strict):
    """A small Llama-style model trained from scratch (known-data pre-training)."""

    hidden_size: int = Field(64, ge=8, description="width of the residual stream")
    layers: int = Field(2, ge=1, description="transformer blocks")
    heads: int = Field(4, ge=1, description="attention heads (must divide hidden_size)")
    kv_heads: int | None = Field(None, ge=1, description="key/value heads of grouped-query attention (None: heads)")
    intermediate_size: int = Field(256, ge=8, description="width of the MLP")
    context: int = Field(256, ge=16, description="maximum positions")
    vocab_size: int = Field(2048, ge=256, description="size of the BPE vocabulary trained on the members")
    tokenizer: Literal["bpe", "gpt2"] = Field(
        "bpe", description="bpe: train a byte-level BPE on the pre-training documents; gpt2: GPT-2's")

    @model_validator(mode="after")
    def _heads_divide(self) -> ArchConfig:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by heads {self.heads}")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} is not divisible by kv_heads {self.kv_heads}")
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
    # SmolLM2-135M's shape (30 blocks of 576, grouped-query attention 9/3), a BPE trained on the members: a
    # known-data model of the paper's scale, for GPUs (scripts/leakage_gpu.py)
    "smol135": {
        "arch": {"hidden_size": 576, "layers": 30, "heads": 9, "kv_heads": 3, "intermediate_size": 1536,
                 "context": 2048, "vocab_size": 32768},
        "train": {"lr": 3e-3, "epochs": 8, "batch_size": 32, "warmup_ratio": 0.05, "weight_decay": 0.0},
    },
}

class PretrainConfig(Strict):
    """Known-data pre-training; `preset` fills in every field the config leaves out."""

    preset: str = Field("tiny", description="micro, tiny or smol135: architecture and training defaults")
    data: Path = Field(default_factory=default_data_dir, description=DATA_HELP)
    splits: list[str] | None = Field(
        None, min_length=1, description="splits to train on (default: every domain's forget + retain, general/retain)")
    exclude: list[str] = Field(default_factory=list, description="splits to leave out (exact retraining)")
    tokenizer_from: Path | None = Field(None, description="reuse this tokenizer instead of training one: a "
                                          "directory or a Hugging Face Hub model name (org/name[@revision])")
    arch: ArchConfig = Field(default_factory=ArchConfig, description="the preset's, with any field overridden")
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    train: TrainConfig = Field(default_factory=TrainConfig, description="the preset's, with any field overridden")
    eval_batch_tokens: int = Field(16384, ge=64, description="tokens per scoring batch after training")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "tiny")
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        return deep_merge(PRESETS[preset], data)

    @classmethod
    def implied_layers(cls, merged: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The preset, a layer between the schema's defaults and the user's (for config.yaml's comments)."""
        preset = merged.get("preset", "tiny")
        return [(f"preset {preset}", PRESETS[preset])] if preset in PRESETS else []


class TargetConfig(Strict, ModelLoading):
    """`lethe target`: known members on a pre-trained LLM: continued training on forget + retain (the target) and,
    with the same recipe and seed, on retain alone (the exact retrain)."""

    model: str = Field(description="the pre-trained model: " + MODEL_HELP)
    data: Path = Field(default_factory=default_data_dir, description=DATA_HELP)
    forget: list[str] | None = Field(
        None, min_length=1, description="splits the target trains on and unlearning must remove "
                                     "(default: every domain's forget split)")
    retain: list[str] | None = Field(
        None, min_length=1, description="splits both models train on (default: the retain split of "
                                     "every domain with a forget split)")
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=1e-4, epochs=3, batch_size=4,
                                                                   warmup_ratio=0.0, scheduler="constant"))
    batch_tokens: int = Field(4096, ge=64, description="tokens per scoring batch")


class EvalPplConfig(Strict, ModelLoading):
    """`lethe eval ppl`: token-weighted perplexity and next-token accuracy per split."""

    model: str = Field(description=MODEL_HELP)
    data: Path = Field(default_factory=default_data_dir, description=DATA_HELP)
    splits: list[str] | None = Field(None, min_length=1, description="splits to score (default: all)")
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    batch_tokens: int = Field(4096, ge=64, description="tokens per scoring batch (padding included)")


class MethodArgs(Strict):
    """The retain knobs every method shares, and each method's own arguments (e.g. npo_beta), declared by its `Args`
    in lethe/unlearning/methods.py. Keys of other methods are accepted and unused: a study shares one set."""

    model_config = ConfigDict(extra="allow")  # the methods' own arguments, validated by their `Args`

    retain_weight: float = Field(1.0, ge=0, description="weight of the retain term")
    retain_ratio: int = Field(1, ge=1, description="retain chunks per forget chunk in each step")
    retain_term: Literal["gd", "kl", "none"] | None = Field(
        None, description="override the method's retain term (npo/simnpo have none by default)")
    retain_data: Literal["in_domain", "general"] | None = Field(
        None, description="override where retain chunks come from")

    @model_validator(mode="before")
    @classmethod
    def _methods_own_arguments(cls, data: Any) -> Any:
        from lethe.unlearning.methods import declared_arguments  # lazily: the methods need torch
        if not isinstance(data, dict):
            return data
        own = declared_arguments().model_validate({k: v for k, v in data.items() if k not in cls.model_fields})
        return {**{k: v for k, v in data.items() if k in cls.model_fields}, **own.model_dump()}


class BlindConfig(Strict):
    """The blind baseline: can a model-free text classifier tell the members from the non-members?"""

    folds: int = Field(5, ge=2, description="cross-validation folds")
    permutations: int = Field(100, ge=10, description="label permutations of the null distribution")


class UnlearnEvalConfig(Strict):
    """How unlearned models are scored: perplexity per role, Min-K% membership inference, utility."""

    mink_k: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [30, 40, 50, 60, 100], min_length=1,
        description="Min-K% percentages to report (Yao et al.)")
    headline_k: int = Field(30, ge=1, le=100, description="the K reported as mia.*")
    batch_tokens: int = Field(4096, ge=64, description="tokens per scoring batch")
    utility: bool = Field(False, description="run the lm-eval utility tasks built from held-out text")
    utility_limit: int | None = Field(100, ge=1, description="items per utility task")
    blind: BlindConfig | None = Field(default_factory=BlindConfig, description="the blind baseline of the MIA's "
                                      "forget and approximate samples (None: skip it)")
    seed: Seed = 0


class UnlearnSettings(Strict, ModelLoading):
    """Everything about an unlearning run except which model, data, domain and method."""

    method_args: MethodArgs = Field(default_factory=MethodArgs)
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    stop_at_approximate: bool = Field(
        False, description="stop once forget perplexity reaches the approximate set's (needs train.eval_every)")
    stop_yardstick: Literal["before", "current"] = Field(
        "before", description="the approximate perplexity the stop compares with: `before`, the model's own before "
        "unlearning, fixed (where an exact retrain's forget perplexity sits); `current`, the model being unlearned "
        "(Yao et al.'s gap, a yardstick that rises with the collateral damage, so the forget set overshoots)")
    stop_keeps: Literal["nearer", "crossing"] = Field(
        "nearer", description="the model a stop keeps: `nearer`, of the evaluation that crossed the mark and the one "
        "before it, the one nearer the mark (a two-sided band: one step can overshoot far; keeps a copy of the "
        "weights on the CPU, not under FSDP or ZeRO-3); `crossing`, the model at the crossing")
    eval: UnlearnEvalConfig = Field(default_factory=UnlearnEvalConfig)
    pretrain_tokens: float | None = Field(
        None, gt=0, description="tokens the model was pre-trained on, for the cost ratio (read from a Lethe "
        "pretrain run when there is one)")


class UnlearnConfig(UnlearnSettings):
    """`lethe unlearn`: one method on one domain's forget set, scored before and after."""

    model: str = Field(description=MODEL_HELP)
    data: Path = Field(default_factory=default_data_dir, description=DATA_HELP)
    domain: str = Field("code", description="whose forget set to unlearn")
    method: str = Field("ga_gd_in", description=METHODS_HELP)
    forget_documents: list[str] | None = Field(None, min_length=1, description="IDs of the forget documents to "
        "unlearn: one deletion request (default: the whole forget set); the evaluation then measures these alone")
