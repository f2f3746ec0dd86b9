"""Shared fixtures: real corpora, a small data build and a `micro` model pre-trained once per session."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

# The tests never reach a hub (there is no network here): set before huggingface_hub and datasets read it on import,
# since `import lethe` leaves the environment alone.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lethe.config import DataBuildConfig, lethe_home  # noqa: E402
from lethe.data.build import build_data  # noqa: E402
from lethe.training.pretrain import pretrain, pretrain_config  # noqa: E402

SMALL_SIZES = {"forget": 6, "retain": 12, "approximate": 6, "general_retain": 12, "general_eval": 6}


@pytest.fixture(scope="session")
def corpus_files() -> dict[str, Path]:
    from lethe.assets.corpora import build_corpora

    return build_corpora(lethe_home())


@pytest.fixture(scope="session")
def data_dir(corpus_files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "splits"
    build_data(DataBuildConfig(out=out, sizes=SMALL_SIZES, max_doc_chars=3000))
    return out


@pytest.fixture(scope="session")
def micro_run(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "micro"
    pretrain(pretrain_config("micro", {"data": str(data_dir), "train": {"epochs": 8}}), out)
    return out


@pytest.fixture(scope="session")
def micro_model(micro_run):
    from lethe.models import load_model

    return load_model(micro_run)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def launch():
    """`accelerate launch` of two CPU processes (torchrun, joined over gloo when there is no GPU), each on a port
    of its own: `make test` runs two test files side by side, and torchrun's default port would collide."""

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
                   "--dynamo_backend", "no", "-m", "lethe.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    return run


def unlearn_books(micro_run: Path, data_dir: Path, out: Path, method: str, settings: dict) -> dict:
    """`lethe unlearn` of the micro model's books forget set through the CLI, with `--set` per setting: results.json."""
    from lethe.cli import main

    assigned = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    assert main(["unlearn", "--model", str(micro_run), "--data", str(data_dir), "--domain", "books",
                 "--method", method, *assigned, "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())
