"""Lethe: machine unlearning of large language models, and measuring what they leak.

The Python API mirrors the CLI: each `lethe <command>` is one function here taking a typed config.
"""

import os

# Lethe never fetches weights or data from a hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # Lethe shows its own progress

# One function per command, from its recipe: `lethe.unlearn(config, out)` runs what `lethe unlearn` runs.
# lethe/demo.py shares the `demo` command's name: imported first, a later import cannot replace the
# function with the module.
import lethe.demo  # noqa: E402, F401
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
from lethe.data.splits import load_splits  # noqa: E402
from lethe.errors import LetheError, TrainingDiverged  # noqa: E402
from lethe.models import load_model  # noqa: E402
from lethe.perplexity import score_splits  # noqa: E402
from lethe.recipes import in_flow_order  # noqa: E402
from lethe.scoring import TokenScores, score_chunks  # noqa: E402
from lethe.training.pretrain import pretrain_config  # noqa: E402

COMMANDS = {recipe.name: recipe.python_api() for recipe in in_flow_order() if recipe.in_api}
globals().update(COMMANDS)

__version__ = "0.1.0"

__all__ = [
    "AssetsConfig", "ChunkConfig", "DataBuildConfig", "DemoConfig", "EvalPplConfig", "EvalUnlearningConfig",
    "ExtractConfig", "FinetuneConfig", "LeakageConfig", "LetheError", "MiaConfig", "PiiConfig", "PoisonConfig",
    "PretrainConfig", "TargetConfig", "TokenScores", "TrainConfig", "TrainingDiverged", "UnlearnConfig",
    "UnlearningStudyConfig", "load_model", "load_splits", "pretrain_config", "resolve", "score_chunks",
    "score_splits",
]
__all__ += list(COMMANDS)
