"""Shared fixtures: real corpora, a small data build and a `micro` model pre-trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from lethe.config import DataBuildConfig, lethe_home
from lethe.data.build import build_data
from lethe.pretrain import pretrain, pretrain_config

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
