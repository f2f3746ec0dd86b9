"""`lethe demo`'s schema: both threat models on one real pre-trained LLM, sized for 2 CPU cores.

Every section is the typed config of the command it runs (data build, target, unlearn, experiment leakage);
DEMO holds the demo's own recipe, and a layer given by the user is merged over it key by key, as
presets are for `pretrain`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from lethe.config.attacks import LeakageConfig
from lethe.config.base import Strict, TargetConfig, UnlearnConfig, deep_merge
from lethe.config.data import DataBuildConfig

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
    # the victim's private data: real books and general text the model is fine-tuned on, with injected PII
    "leakage_data": {"domains": ["books"], "max_doc_chars": 800,
                     "sizes": {"forget": 1, "retain": 1, "approximate": 14, "general_retain": 12, "general_eval": 14}},
    "leakage": {
        "reference": "general/retain", "variants": ["benign", "forget_to_flourish"], "modes": ["lora"],
        "pii": {"splits": ["general/eval", "books/approximate"], "members": 12, "nonmembers": 12,
                "repetitions": 2, "filler_docs": 8, "validation_docs": 4},
        "blind": {"permutations": 50}, "bootstrap": 200,
        "poison": {"noise": {"model": "random_tokens", "rate": 0.3, "copies": 1},
                   "bound": {"kind": "relative", "epsilon": 1.05}, "reference_chunks": 12,
                   "train": {"lr": 5e-5, "epochs": 3, "batch_size": 8, "warmup_ratio": 0.0, "scheduler": "constant",
                             "log_every": 1}},
        "finetune": {"train": {"lr": 3e-4, "epochs": 2, "batch_size": 8, "warmup_ratio": 0.03,
                               "scheduler": "linear"}},
        "mia": {"bootstrap": 200},
        "extract": {"decoding": {"strategies": ["greedy"]}, "exposure": {"candidates": 100}},
    },
}


class DemoConfig(Strict):
    """`lethe demo`: unlearn a forget set (Yao et al.), then poison a release and fine-tune it (Rashid et al.)."""

    model: str = Field(description="the pre-trained model both halves start from (a directory or an alias)")
    unlearning_data: DataBuildConfig = Field(description="splits of the unlearning half (`out` set by the demo)")
    target: TargetConfig = Field(description="the known-member target and its exact retrain (data set by the demo)")
    unlearn: UnlearnConfig = Field(description="the unlearning run (its model, the target, and data are set by the "
                                   "demo)")
    leakage_data: DataBuildConfig = Field(description="splits the victim's data and D* come from")
    leakage: LeakageConfig = Field(description="the leakage experiment (its model and data are set by the demo)")

    @model_validator(mode="before")
    @classmethod
    def _demo_recipe(cls, data: Any) -> Any:
        merged = deep_merge(DEMO, data if isinstance(data, dict) else {})
        for section in ("target", "unlearn", "leakage"):
            merged[section] = {**merged[section], "model": merged["model"]}
        return merged
