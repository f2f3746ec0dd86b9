"""Lethe: machine unlearning of large language models, and measuring what they leak.

The Python API mirrors the CLI: each `lethe <command>` is one function here taking a typed config.
"""

import os

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
    EvalPplConfig,
    PretrainConfig,
    TrainConfig,
)
from lethe.data.build import build_data  # noqa: E402
from lethe.data.splits import load_splits  # noqa: E402
from lethe.errors import LetheError, TrainingDiverged  # noqa: E402
from lethe.evaluate import eval_ppl, score_splits  # noqa: E402
from lethe.models import load_model  # noqa: E402
from lethe.pretrain import pretrain, pretrain_config  # noqa: E402
from lethe.scoring import TokenScores, score_chunks  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AssetsConfig", "ChunkConfig", "DataBuildConfig", "EvalPplConfig", "LetheError", "PretrainConfig",
    "TokenScores", "TrainConfig", "TrainingDiverged", "build_assets", "build_data", "eval_ppl", "load_model",
    "load_splits", "pretrain", "pretrain_config", "score_chunks", "score_splits",
]
