"""Lethe: machine unlearning of large language models, and measuring what they leak.

The Python API mirrors the CLI: each `lethe <command>` is one function here taking a typed config.
"""

# Importing Lethe changes nothing in the caller's process (no environment variables): offline mode and
# quiet progress bars are the CLI's choice (`lethe --offline`), or the caller's.

# One function per command, from its recipe: `lethe.unlearn(config, out)` runs what `lethe unlearn` runs.
# lethe/demo.py shares the `demo` command's name: imported first, a later import cannot replace the
# function with the module.
import lethe.demo  # noqa: F401
from lethe.config import (
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
from lethe.data.splits import load_splits
from lethe.errors import LetheError, TrainingDiverged
from lethe.models import load_model
from lethe.perplexity import score_splits
from lethe.recipes import in_flow_order
from lethe.scoring import TokenScores, score_chunks
from lethe.training.pretrain import pretrain_config

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
