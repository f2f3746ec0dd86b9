"""Lethe: machine unlearning of large language models, and measuring what they leak.

The Python API mirrors the CLI: each `lethe <command>` is one function here taking a typed config.
"""

import os
from pathlib import Path

# Lethe never fetches weights or data from a hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # Lethe shows its own progress

from lethe.assets import build_assets  # noqa: E402
from lethe.config import (  # noqa: E402
    AssetsConfig,
    ChunkConfig,
    DataBuildConfig,
    DemoConfig,
    EvalPplConfig,
    EvalUnlearningConfig,
    ExtractConfig,
    FinetuneConfig,
    LeakageConfig,
    MiaConfig,
    PiiConfig,
    PoisonConfig,
    PretrainConfig,
    TargetConfig,
    TrainConfig,
    UnlearnConfig,
    UnlearningStudyConfig,
    resolve,
)
from lethe.data.build import build_data  # noqa: E402
from lethe.data.splits import load_splits  # noqa: E402
from lethe.demo import run_demo  # noqa: E402  (eager: a lazy import would replace `demo` below with its module)
from lethe.errors import LetheError, TrainingDiverged  # noqa: E402
from lethe.evaluate import eval_ppl, score_splits  # noqa: E402
from lethe.finetune import finetune  # noqa: E402  (eager: a lazy import would replace it with its module)
from lethe.models import load_model  # noqa: E402
from lethe.pretrain import pretrain, pretrain_config  # noqa: E402
from lethe.scoring import TokenScores, score_chunks  # noqa: E402


def unlearn(config: UnlearnConfig, out, **kwargs) -> dict:
    """`lethe unlearn`: one method on one forget set, scored before and after."""
    from lethe.unlearning.run import unlearn as run

    return run(config, Path(out), **kwargs)


def eval_unlearning(config: EvalUnlearningConfig, out, **kwargs) -> dict:
    """`lethe eval unlearning`: perplexity per role, Min-K% MIA, approximate-retraining gap, retrain distance."""
    from lethe.unlearning.evaluation import eval_unlearning as run

    return run(config, Path(out), **kwargs)


def experiment_unlearning(config: UnlearningStudyConfig, out, **kwargs) -> dict:
    """`lethe experiment unlearning`: every method × domain."""
    from lethe.unlearning.study import run_experiment

    return run_experiment(config, Path(out), **kwargs)


def attack_mia(config: MiaConfig, out, **kwargs) -> dict:
    """`lethe attack mia`: every membership-inference attack from one scoring pass per model."""
    from lethe.attacks.mia import run_mia

    return run_mia(config, Path(out), **kwargs)


def attack_extract(config: ExtractConfig, out, **kwargs) -> dict:
    """`lethe attack extract`: prompt with prefixes, decode, count recovered secrets."""
    from lethe.attacks.extraction import extract

    return extract(config, Path(out), **kwargs)


def build_pii(config: PiiConfig, **kwargs) -> dict:
    """`lethe data pii`: membership targets (PII records or unseen documents) and the victim's fine-tuning set."""
    from lethe.data.pii import build_pii as run

    return run(config, **kwargs)


def poison(config: PoisonConfig, out, **kwargs) -> dict:
    """`lethe poison`: release a model (forget_to_flourish or a baseline)."""
    from lethe.poisoning.poison import poison as run

    return run(config, Path(out), **kwargs)


def experiment_leakage(config: LeakageConfig, out, **kwargs) -> dict:
    """`lethe experiment leakage`: released variants × fine-tuning modes."""
    from lethe.leakage.study import run_leakage

    return run_leakage(config, Path(out), **kwargs)


def target(config: TargetConfig, out, **kwargs) -> dict:
    """`lethe target`: a pre-trained model trained on forget + retain, and its exact retrain on retain alone."""
    from lethe.known_members import build_target

    return build_target(config, Path(out), **kwargs)


def experiment_calibrate(config: LeakageConfig, out, **kwargs) -> dict:
    """`lethe experiment calibrate`: the victim's learning rate × epochs, chosen on a seed of its own."""
    from lethe.leakage.calibration import calibrate_victim

    return calibrate_victim(config, Path(out), **kwargs)


def demo(config: DemoConfig | None = None, out="runs/demo", **kwargs) -> dict:
    """`lethe demo`: both threat models on SmolLM2-135M (or `config.model`), ending in an HTML report."""
    return run_demo(config or resolve(DemoConfig), Path(out), **kwargs)


def report(runs, out=None, *, overwrite: bool = False) -> Path:
    """`lethe report`: report.html and report.md from run directories, without rerunning a model."""
    from lethe.reporting import write_report

    return write_report(runs, out, overwrite=overwrite)


__version__ = "0.1.0"

__all__ = [
    "AssetsConfig", "ChunkConfig", "DataBuildConfig", "DemoConfig", "EvalPplConfig", "EvalUnlearningConfig",
    "ExtractConfig", "FinetuneConfig", "LeakageConfig", "LetheError", "MiaConfig", "PiiConfig", "PoisonConfig",
    "PretrainConfig", "TargetConfig", "TokenScores", "TrainConfig", "TrainingDiverged", "UnlearnConfig",
    "UnlearningStudyConfig", "attack_extract", "attack_mia", "build_assets", "build_data", "build_pii", "demo",
    "eval_ppl", "eval_unlearning", "experiment_calibrate", "experiment_leakage", "experiment_unlearning", "finetune",
    "load_model", "load_splits", "poison", "pretrain", "pretrain_config", "report", "resolve", "score_chunks",
    "score_splits", "target", "unlearn",
]
