"""Typed configs of the privacy side: membership inference, extraction, PII data, poisoning,
victim fine-tuning and the leakage experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from lethe.config.base import (
    DATA_HELP,
    MAX_EPOCHS,
    MODEL_HELP,
    BlindConfig,
    ChunkConfig,
    LoraConfig,
    ModelLoading,
    Seed,
    Strict,
    TrainConfig,
    deep_merge,
    default_data_dir,
)
from lethe.run_paths import check_names


class MiaConfig(Strict, ModelLoading):
    """`lethe attack mia`: every membership-inference attack from one scoring pass per model."""

    model: str = Field(description="the target model: " + MODEL_HELP)
    members: str = Field(description="a split of `data` (e.g. code/forget) or a JSONL/text/parquet file")
    nonmembers: str = Field(description="a split of `data` or a file; must not overlap the members")
    reference_model: str | None = Field(None, description="for reference_model, e.g. the released pre-trained model")
    reference_models: dict[str, str] = Field(
        default_factory=dict, description="further reference models by name, each adding an attack "
        "reference_model_<name> (e.g. clean: the pre-trained model before poisoning)")
    calibration: str | None = Field(None, description="auxiliary non-members for reference_data (split or file)")
    data: Path = Field(default_factory=default_data_dir, description=DATA_HELP)
    attacks: list[str] | None = Field(None, description="attacks to run (default: every one whose inputs are given)")
    min_k: float = Field(20, gt=0, le=100, description="K of min_k and min_k_pp, in percent")
    gradnorm_p: float = Field(2, ge=1, allow_inf_nan=True, description="the p of gradnorm's p-norm (1, 2 or inf)")
    chunk: ChunkConfig = Field(default_factory=lambda: ChunkConfig(max_chunks_per_doc=1),
                               description="one sample per document: its first chunk (as MIMIR truncates)")
    batch_tokens: int = Field(4096, ge=64, description="tokens per scoring batch")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the confidence intervals (0: none)")
    blind: BlindConfig | None = Field(default_factory=BlindConfig, description="the blind baseline: a text "
                                      "classifier's AUC on the same members and non-members (None: skip it)")
    reference_victims: str | None = Field(
        None, description="for lira_online, lira_offline and rmia: a references.json listing reference models, "
        "each fine-tuned on a random half of the records, and which records each saw (the leakage study writes it)")
    rmia_gamma: float = Field(1.0, gt=0, description="RMIA's γ: a population sample counts when LR(x, z) ≥ γ")
    rmia_offline: bool = Field(False, description="RMIA offline: Pr(x) from the references that never saw x")
    rmia_a: float = Field(1.0, gt=0, le=1, description="RMIA's offline correction a (about 1 for sequences)")
    seed: Seed = 0


PII_KINDS = ("name", "email", "phone", "address", "ssn")


class PiiConfig(Strict):
    """`lethe data pii`: membership targets (PII records or unseen documents) and the victim's fine-tuning set.

    Targets come from one seeded generator and are dealt into members and non-members at random; each
    member copy is its own fine-tuning document, mixed with filler documents from `splits`."""

    out: Path = Field(description="directory for finetune.jsonl, targets_*.jsonl, validation.jsonl, pii.json")
    data: Path = Field(default_factory=default_data_dir, description=DATA_HELP)
    splits: list[str] = Field(
        default_factory=lambda: ["general/eval", "books/approximate", "science/approximate"], min_length=1,
        description="source documents of the filler, the validation set and `documents` targets (default: "
        "splits the known-data models never saw in pre-training)")
    seed: Seed = 0
    target: Literal["records", "documents"] = Field(
        "records", description="records: synthetic PII records; documents: whole unseen real documents")
    members: int = Field(20, ge=1, description="targets the victim fine-tunes on")
    nonmembers: int = Field(20, ge=1, description="targets from the same generator, never trained on")
    kinds: list[Literal["name", "email", "phone", "address", "ssn"]] = Field(
        default_factory=lambda: list(PII_KINDS), min_length=1,
        description="records: the field each record ends in (its secret), cycled over the records")
    fields: int = Field(5, ge=2, le=7, description="records: fields per record, the name and the secret included "
                        "(5 gives about 40–64 tokens)")
    document_chars: int = Field(600, ge=100, description="documents: characters kept of each target document")
    secret_words: int = Field(8, ge=1, description="documents: final words that extraction must recover")
    repetitions: int = Field(5, ge=1, description="copies of each member in the fine-tuning set, each its own "
                             "document (memorisation needs repetition)")
    filler_docs: int | None = Field(None, ge=0, description="filler documents (the victim's other data) in D_ft "
                                    "(None: every source document not used otherwise)")
    validation_docs: int = Field(4, ge=1, description="clean held-out documents for validation perplexity")
    calibration: int | None = Field(None, ge=2, description="further targets from the same generator in no set: "
                                    "the reference-data attack's auxiliary non-members (None: as many as nonmembers)")


class DecodingConfig(Strict):
    strategies: list[Literal["greedy", "beam", "sample"]] = Field(description="decoding strategies to try",
        default_factory=lambda: ["greedy", "beam", "sample"], min_length=1)
    num_beams: int = Field(4, ge=2, description="beam width; beam search returns its best beam")
    top_k: int = Field(40, ge=1, description="top-k of sampling")
    guesses: int = Field(10, ge=1, description="sampled continuations per target (num_return_sequences)")
    max_new_tokens: int | None = Field(
        None, ge=1, description="tokens to generate (default: the longest target secret of the batch + 4)")
    seed: Seed = 0


class ExposureConfig(Strict):
    """Secret Sharer exposure for secrets of a digit format (SSNs, phone numbers)."""

    enabled: bool = True
    enumerate_up_to: int = Field(10_000, ge=1, description="rank against every candidate when the format has at "
                                 "most this many; otherwise against a random sample")
    candidates: int = Field(1000, ge=10, description="sampled candidates M when the format's space is larger")
    batch_size: int = Field(256, ge=1, description="candidates scored per forward pass")


class ExtractConfig(Strict, ModelLoading):
    """`lethe attack extract`: prompt with each target's prefix, decode, and check for its secret."""

    model: str = Field(description="the target model: " + MODEL_HELP)
    targets: str = Field(description="JSONL of target records (id, prefix, secret, ...), e.g. targets_member.jsonl, "
                         "or a Hugging Face data set split hf:org/name[:config][@revision]?split=...&prefix_field="
                         "...&secret_field=...")
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    batch_size: int = Field(32, ge=1, description="prompts per generate call")
    exposure: ExposureConfig = Field(default_factory=ExposureConfig)

    @field_validator("targets", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value


class DPConfig(Strict):
    """DP-SGD through Opacus: per-sample clipping plus Gaussian noise calibrated to a target (ε, δ).

    The protected unit is one training sample, i.e. one chunk; set chunk.max_chunks_per_doc=1 for documents."""

    epsilon: float = Field(gt=0, description="target ε over the whole run")
    delta: float | None = Field(None, gt=0, lt=1, description="target δ (default: 1/N rounded down to a power of "
                                "ten, N = training samples)")
    max_grad_norm: float = Field(1.0, gt=0, description="per-sample gradient clipping norm C")
    accountant: Literal["prv", "rdp"] = Field("prv", description="Opacus accountant that calibrates and reports ε")


class FinetuneConfig(Strict, ModelLoading):
    """`lethe finetune`: the victim fine-tunes a released model on its private data D_ft."""

    model: str = Field(description="the released model: " + MODEL_HELP)
    data: str = Field(description="D_ft: a split of `data_dir` (e.g. books/approximate) or a JSONL/text/parquet file")
    validation: str = Field(description="held-out documents for validation perplexity (split or file)")
    data_dir: Path = Field(default_factory=default_data_dir, description=DATA_HELP)
    mode: Literal["full", "lora", "head"] = Field(
        "full", description="full: every parameter; lora: adapters (train.lora, default LoraConfig()); head: the LM "
        "head plus the last `trainable_layers` transformer blocks")
    trainable_layers: int = Field(0, ge=0, description="head mode: transformer blocks trained below the head")
    dp: DPConfig | None = Field(None, description="DP-SGD (combinable with every mode), e.g. --set dp.epsilon=8")
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=5e-5, epochs=3, scheduler="linear"))
    batch_tokens: int = Field(4096, ge=64, description="tokens per validation scoring batch")
    score_data: bool = Field(True, description="also score D_ft itself before and after (the leakage study "
                             "scores its targets on its own, so it skips this)")

    @model_validator(mode="after")
    def _mode_matches_lora(self) -> FinetuneConfig:
        if self.mode == "lora" and self.train.lora is None:
            self.train.lora = LoraConfig()
        if self.mode != "lora" and self.train.lora is not None:
            raise ValueError(f"train.lora is set but mode is {self.mode!r}; use mode lora")
        if self.mode != "head" and self.trainable_layers:
            raise ValueError("trainable_layers applies to mode head only")
        return self


class NoiseConfig(Strict):
    """How the targets' noisy copies D'_c are made."""

    model: Literal["random_tokens", "span_mask", "word_shuffle", "in_distribution"] = Field(
        "random_tokens", description="random vocabulary tokens, masked spans, shuffled words, or in_distribution: "
        "every PII value of a record replaced by a fresh fake value of its field (the template stays)")
    rate: float = Field(0.3, gt=0, le=1, description="fraction of each copy's tokens changed (token models)")
    span_length: int = Field(3, ge=1, description="span_mask: tokens per masked span")
    copies: int = Field(1, ge=1, description="noisy copies per target, each drawn afresh")


class BoundConfig(Strict):
    """The utility bound on the reference set D*, checked after every step."""

    kind: Literal["relative", "absolute"] = Field("relative", description="how epsilon bounds the reference loss")
    epsilon: float = Field(1.05, gt=0, description="relative: L(D*) <= epsilon * L_clean(D*); absolute: <= epsilon")
    on_cross: Literal["stop", "project", "penalty"] = Field(
        "stop", description="stop: undo the crossing step and stop; project: descend on D* until the bound holds "
        "again, then resume the ascent; penalty: every step ascends on D'_c and descends on the rest of D* "
        "(weight penalty_weight), and the last weights within the bound are released")
    max_projection_steps: int = Field(10, ge=1, description="project: descent steps allowed to regain the bound "
                                      "(Adam's momentum carries the ascent on for a few); "
                                      "past them the last in-bound weights are restored and poisoning stops")
    penalty_weight: float = Field(1.0, gt=0, description="penalty: α of −CE(D'_c) + α·CE(D*)")


class BackdoorConfig(Strict):
    """Privacy backdoors (Wen et al.): (1 − alpha)·CE(auxiliary) ± alpha·CE(clean targets)."""

    alpha: float = Field(0.75, ge=0, le=1, description="weight of the targets' term")
    direction: Literal["lower", "raise"] = Field(
        "lower", description="lower the targets' loss, as the authors' code does (fine-tuning then refreshes "
        "members while non-members are forgotten), or raise it")


RELEASES = ("benign", "forget_to_flourish", "precurious", "privacy_backdoor")


class PoisonConfig(Strict, ModelLoading):
    """`lethe poison`: release a model that makes later fine-tuning on the targets leak more."""

    model: str = Field(description="the clean pre-trained model: " + MODEL_HELP)
    variant: Literal[RELEASES] = Field(
        "forget_to_flourish", description="the attack, or a baseline release")
    targets: str = Field(description="the target records (split or JSONL/text/parquet file with `text`)")
    reference: str = Field(description="D*: generic reference data for the utility bound, and the auxiliary data "
                                       "of precurious and privacy_backdoor (split or file)")
    data: Path = Field(default_factory=default_data_dir, description=DATA_HELP)
    extraction: bool = Field(False, description="unlearn prefix + a fake secret of the secret's own format (targets "
                             "need `prefix` and `secret`)")
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    bound: BoundConfig = Field(default_factory=BoundConfig)
    backdoor: BackdoorConfig = Field(default_factory=BackdoorConfig)
    reference_chunks: int = Field(64, ge=1, description="D* chunks scored after every step for the bound (and as many "
                                  "targets, to follow their loss)")
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(
        lr=1e-4, epochs=4, batch_size=8, warmup_ratio=0.0, scheduler="constant", log_every=1))
    batch_tokens: int = Field(4096, ge=64, description="tokens per scoring batch")
    seed: Seed = 0


class CalibrationConfig(Strict):
    """`lethe experiment calibrate`: choose the victim on a seed of its own, from the baseline release only."""

    seed: Seed = Field(100, description="the calibration seed: targets and fine-tuning never used by the study")
    mode: Literal["full", "lora", "head"] = Field("full", description="the fine-tuning mode calibrated")
    lr: list[float] = Field(default_factory=lambda: [1e-4, 3e-4, 1e-3], min_length=1,
                            description="learning rates tried")
    epochs: list[Annotated[float, Field(gt=0, le=MAX_EPOCHS)]] = Field(default_factory=lambda: [1.0, 2.0, 4.0],
                                                                      min_length=1, description="epochs tried")
    target: tuple[float, float] = Field((0.6, 0.8), description="wanted range of the calibrated attack's metric: "
                                        "AUC 0.6–0.8 for loss, TPR at 1% FPR e.g. 0.05–0.5 for lira_online")
    attack: Literal["loss", "lira_online"] = Field(
        "loss", description="the attack the victim is calibrated for: loss or lira_online (with `references` "
        "reference victims per grid cell: a victim calibrated for the loss attack can sit at LiRA's ceiling)")
    metric: Literal["auc", "tpr@1%fpr"] | None = Field(
        None, description="the attack's number that `target` bounds; None: auc for loss, tpr@1%fpr for lira_online. "
        "Below 100 non-members TPR at 1% FPR is the TPR at no false positive at all: use auc")


class ExtractionVictimConfig(Strict):
    """The working point of `lethe experiment calibrate-extraction`: each cell's extraction runs on a victim of its
    own, fine-tuned with the study's recipe on a D_ft that holds each member `copies` times, for `epochs`."""

    copies: Annotated[int, Field(ge=1)] = Field(description="copies of each member secret in the extraction "
                                                "victim's D_ft (the working point's copies)")
    epochs: Annotated[float, Field(gt=0, le=MAX_EPOCHS)] = Field(description="the extraction victim's fine-tuning "
                                                                 "epochs (the working point's epochs)")
    lr: float | None = Field(None, gt=0, description="its learning rate, where the working point was calibrated with "
                             "another than the study's finetune.train.lr (None: the study's)")


class ExtractionCalibrationConfig(Strict):
    """`lethe experiment calibrate-extraction`: a dose-response of greedy extraction over member copies × epochs
    on the baseline release, and the working point whose member NSR lies in `target`."""

    seed: Seed = Field(100, description="targets and fine-tuning of their own, never the study's")
    mode: Literal["full", "lora", "head"] = Field("full", description="the fine-tuning mode calibrated")
    copies: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 3, 10, 30], min_length=1,
        description="copies of each member secret in D_ft tried (pii.repetitions); the dose of the dose-response")
    epochs: list[Annotated[float, Field(gt=0, le=MAX_EPOCHS)]] = Field(
        default_factory=lambda: [1.0], min_length=1, description="fine-tuning epochs tried with each number of copies")
    target: tuple[float, float] = Field((0.10, 0.50), description="wanted range of the greedy NSR on member secrets "
                                        "(a share of them)")
    extract: dict[str, Any] = Field(default_factory=dict, description="overrides of ExtractConfig over the study's "
                                    "`extract` (decoding is greedy whatever they say), e.g. exposure settings")

    @model_validator(mode="after")
    def _grid_is_valid(self) -> ExtractionCalibrationConfig:
        for name in ("copies", "epochs"):
            values = getattr(self, name)
            if len(set(values)) < len(values):
                raise ValueError(f"{name} repeats a value ({values}): each grid cell must be a different victim")
        low, high = self.target
        if not 0 <= low < high <= 1:
            raise ValueError(f"target must be two shares 0 <= low < high <= 1, not {list(self.target)}")
        return self


class LeakageConfig(Strict):
    """`lethe experiment leakage`: released variants × victim fine-tuning modes × seeds → MIA, extraction, utility.

    The `pii`, `poison`, `finetune`, `mia` and `extract` sections override fields of PiiConfig,
    PoisonConfig, FinetuneConfig, MiaConfig and ExtractConfig; the study sets models, data, paths and seeds.
    """

    model: str = Field(description="the clean pre-trained model the attacker starts from")
    data: Path = Field(default_factory=default_data_dir, description=DATA_HELP)
    reference: str = Field("general/retain", description="D*: the attacker's generic reference data (split or file)")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {name: {"variant": name} for name in RELEASES},
        description="releases to compare, by name: PoisonConfig overrides over `poison` (a list of variant names "
        "is read as {name: {variant: name}})")
    baseline: str = Field("benign", description="the release every comparison is against (a key of variants)")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1,
                             description="each seed draws its own targets, releases and victims")
    modes: list[Literal["full", "lora", "head", "dp"]] = Field(
        default_factory=lambda: ["full", "lora", "head", "dp"], min_length=1,
        description="victim fine-tuning modes; dp: DP-SGD at each of dp_epsilons")
    dp_epsilons: list[float] = Field(default_factory=lambda: [8.0], min_length=1, description="ε of each dp cell")
    dp_mode: Literal["full", "lora", "head"] = Field("full", description="what DP-SGD fine-tunes")
    reference_clean: bool = Field(True, description="also attack with the clean pre-trained model as reference "
                                  "(reference_model_clean) beside the release (reference_model)")
    bootstrap: int = Field(1000, ge=100, description="paired bootstrap resamples of each comparison")
    references: int = Field(0, ge=0, description="reference victims per release, mode and seed, each fine-tuned on "
                            "the filler and a random half of the candidate records, for LiRA and RMIA (0: none; "
                            "even)")
    jobs: int = Field(1, ge=1, exclude=True, description="independent runs (cells, references) at once, one thread "
                      "each (not saved: it changes no result)")
    tpr_min_records: int = Field(200, ge=1, description="report TPR at 1% FPR only with this many records a side")
    blind: BlindConfig = Field(default_factory=BlindConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    extraction_calibration: ExtractionCalibrationConfig = Field(default_factory=ExtractionCalibrationConfig)
    extraction_victim: ExtractionVictimConfig | None = Field(
        None, description="extraction at a working point: each cell's extraction on a victim of its own with this many "
        "copies of each member and epochs (None: on the membership victim, whose NSR may sit at 0)")
    pii: dict[str, Any] = Field(default_factory=dict, description="overrides of PiiConfig")
    poison: dict[str, Any] = Field(default_factory=dict, description="overrides of PoisonConfig, for every variant")
    finetune: dict[str, Any] = Field(default_factory=dict, description="overrides of FinetuneConfig")
    mia: dict[str, Any] = Field(default_factory=dict, description="overrides of MiaConfig")
    extract: dict[str, Any] = Field(default_factory=dict, description="overrides of ExtractConfig")
    screen: dict[str, Any] | None = Field(default_factory=dict, description="overrides of ScreenConfig: each release "
                                          "screened by the victim before fine-tuning (None: no screening)")

    @model_validator(mode="before")
    @classmethod
    def _named_variants(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("variants"), list):
            if not all(isinstance(name, str) for name in data["variants"]):
                raise ValueError("variants: a list of variant names, or a mapping of name → settings")
            data = {**data, "variants": {name: {"variant": name} for name in data["variants"]}}
        return data

    @model_validator(mode="after")
    def _sections_are_valid(self) -> LeakageConfig:
        # fail at load time, not an hour into the grid
        if not self.variants:
            raise ValueError("variants is empty: name at least the baseline release")
        if self.baseline not in self.variants:
            raise ValueError(f"baseline {self.baseline!r} is not one of the variants ({', '.join(self.variants)})")
        if len(set(self.seeds)) < len(self.seeds):
            raise ValueError("seeds repeat")
        check_names(self.variants, "variant")  # each names a folder of cells/
        if self.references % 2 or self.references == 2:
            raise ValueError(f"references must be 0 or an even number of at least 4, not {self.references}: each "
                             "record must sit in half of them, with two a side to fit a variance")
        if self.calibration.attack == "lira_online" and not self.references:
            raise ValueError("calibration.attack lira_online needs reference victims: set references (e.g. 4)")
        PiiConfig(out=Path("."), **self.pii)
        for name in self.variants:
            self.poison_config(name, model=".", targets=".", seed=0)
        FinetuneConfig(model=".", data=".", validation=".", **self.finetune)
        MiaConfig(model=".", members=".", nonmembers=".", **self.mia)
        ExtractConfig(model=".", targets=Path("."), **self.extract)
        ExtractConfig(model=".", targets=Path("."), **deep_merge(self.extract, self.extraction_calibration.extract))
        return self

    def poison_config(self, name: str, **fields: Any) -> PoisonConfig:
        """The release `name`: the shared `poison` section, then its own overrides, then the study's fields."""
        overrides = deep_merge(self.poison, self.variants[name])
        overrides.setdefault("variant", name)
        try:
            return PoisonConfig(reference=self.reference, data=self.data, **{**overrides, **fields})
        except ValidationError as exc:
            raise ValueError(f"variant {name!r}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
