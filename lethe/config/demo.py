"""`lethe demo`'s schema: both threat models on one real pre-trained LLM, sized for 2 CPU cores.

Every section is the typed config of the command it runs (data build, target, unlearn, experiment leakage);
DEMO holds the demo's own recipe, and a layer given by the user is merged over it key by key, as
presets are for `pretrain`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from lethe.config.attacks import LeakageConfig
from lethe.config.base import PretrainConfig, Strict, TargetConfig, UnlearnConfig, deep_merge
from lethe.config.data import DataBuildConfig

LEAKAGE_MODEL = "leakage-model"  # the leakage half's pre-trained model, a run directory under the demo's own

DEMO: dict[str, Any] = {
    "model": "smollm2-135m",
    # membership made known: LaTeX sources the target trains on (forget + retain) or not (approximate), dealt
    # from one source at random, so forget and approximate differ only in membership
    "unlearning_data": {"domains": ["science"], "max_doc_chars": 1200,
                        "sizes": {"forget": 8, "retain": 8, "approximate": 8, "general_retain": 8, "general_eval": 8}},
    "target": {"forget": ["science/forget"], "chunk": {"length": 128},
               "train": {"lr": 1e-4, "epochs": 2, "batch_size": 4, "warmup_ratio": 0.0, "scheduler": "constant"}},
    "unlearn": {
        "domain": "science", "method": "ga_gd_in", "stop_at_approximate": True,
        "chunk": {"length": 128, "max_chunks_per_doc": 2},
        "train": {"lr": 2e-4, "epochs": 3, "batch_size": 4, "warmup_ratio": 0.0, "scheduler": "constant",
                  "eval_every": 1, "log_every": 1},
        "eval": {"batch_tokens": 2048},
    },
    # the leakage half runs on a small model pre-trained here, not on SmolLM2: its positive control needs about 100
    # records a side before a paired interval clears 0, and on SmolLM2 a poisoned release of 64 records already
    # costs 12 minutes of one CPU (docs/quickstart.md). Its known text: general and books documents (retain); the
    # victim's filler, its held-out records' text and the PII records themselves are text it never saw.
    "leakage_data": {"domains": ["books"], "max_doc_chars": 800,
                     "sizes": {"forget": 1, "retain": 60, "approximate": 40, "general_retain": 150,
                               "general_eval": 40}},
    "leakage_pretrain": {"preset": "micro", "train": {"epochs": 8}},
    "leakage": {
        "reference": "general/retain",
        # the positive control (Wen et al.'s privacy backdoor, as its authors ship it) beside Forget to Flourish
        "variants": {"benign": {}, "backdoor": {"variant": "privacy_backdoor"},
                     "forget_to_flourish": {"variant": "forget_to_flourish"}},
        "modes": ["full"],
        "pii": {"splits": ["general/eval", "books/approximate"], "members": 100, "nonmembers": 100,
                "repetitions": 2, "filler_docs": 20, "validation_docs": 4},
        "blind": {"permutations": 50}, "bootstrap": 200,
        "poison": {"noise": {"model": "random_tokens", "rate": 0.3, "copies": 1},
                   "bound": {"kind": "relative", "epsilon": 1.05},
                   "train": {"lr": 3e-4, "epochs": 4, "batch_size": 16, "warmup_ratio": 0.0, "scheduler": "constant",
                             "log_every": 1}},
        # calibrated before the demo's first leakage run (seed 100, the benign release, grid lr 1e-3/3e-3 × 1/2/4
        # epochs: loss AUC 0.598–0.756): lr 1e-3 × 4, loss AUC 0.694, nearest 0.7. After a demo run, `lethe experiment
        # calibrate --config runs/demo/leakage/config.yaml --out runs/calibrate-demo` repeats it (73 s)
        "finetune": {"train": {"lr": 1e-3, "epochs": 4, "batch_size": 16, "warmup_ratio": 0.03,
                               "scheduler": "linear"}},
        "mia": {"bootstrap": 200, "attacks": ["loss", "min_k", "reference_model"]},
        "extract": {"decoding": {"strategies": ["greedy"]}, "exposure": {"candidates": 100}},
        "calibration": {"seed": 100, "mode": "full", "lr": [1e-3, 3e-3], "epochs": [1, 2, 4]},
    },
}


class DemoConfig(Strict):
    """`lethe demo`: unlearn a forget set (Yao et al.), then poison a release and fine-tune it (Rashid et al.)."""

    model: str = Field(description="the pre-trained model the unlearning half starts from (a directory or an alias); "
                       "the leakage half's too when leakage_pretrain is null")
    unlearning_data: DataBuildConfig = Field(description="splits of the unlearning half (`out` set by the demo)")
    target: TargetConfig = Field(description="the known-member target and its exact retrain (data set by the demo)")
    unlearn: UnlearnConfig = Field(description="the unlearning run (its model, the target, and data are set by the "
                                   "demo)")
    leakage_data: DataBuildConfig = Field(description="splits the victim's data and D* come from")
    leakage_pretrain: PretrainConfig | None = Field(
        description="the leakage half's model, pre-trained by the demo on leakage_data's known splits (null: the "
        "leakage half runs on `model`)")
    leakage: LeakageConfig = Field(description="the leakage experiment (its data, and its model unless "
                                   "leakage_pretrain is null, are set by the demo)")

    @model_validator(mode="before")
    @classmethod
    def _demo_recipe(cls, data: Any) -> Any:
        merged = deep_merge(DEMO, data if isinstance(data, dict) else {})
        for section in ("target", "unlearn", "leakage"):
            merged[section] = {**merged[section], "model": merged["model"]}
        if merged.get("leakage_pretrain") is not None:  # the demo points the leakage half at what it pre-trains
            merged["leakage"]["model"] = LEAKAGE_MODEL
        return merged
