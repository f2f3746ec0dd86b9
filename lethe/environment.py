"""What env.json records: the machine, the packages and the code a run used."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("lethe-llm", "torch", "transformers", "accelerate", "peft", "datasets", "huggingface_hub", "tokenizers",
            "safetensors", "numpy", "scikit-learn", "pydantic", "opacus")


def git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def environment(seed: int | None = None) -> dict[str, Any]:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "packages": versions,
        "git_commit": git_commit(),
        "seed": seed,
        "argv": sys.argv,
        "lethe_home": os.environ.get("LETHE_HOME"),
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE"),
        "hub": {},  # each Hugging Face Hub name the run resolves, with its commit, added as it resolves (lethe/hub.py)
    }
