"""Every config shipped in configs/ validates against its command's schema, every run of a study included: a
typo in a study's YAML fails here, not an hour into a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from lethe.config import DataBuildConfig, LeakageConfig, TargetConfig, UnlearningStudyConfig, read_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SCHEMAS = {"data": DataBuildConfig, "leakage": LeakageConfig, "target": TargetConfig,
           "unlearning": UnlearningStudyConfig}  # accelerate/: tests/test_docs.py


def test_every_folder_of_configs_has_a_schema():
    assert {path.name for path in CONFIGS.iterdir() if path.is_dir()} == {*SCHEMAS, "accelerate"}


@pytest.mark.parametrize("path", sorted(p for name in SCHEMAS for p in (CONFIGS / name).glob("*.yaml")),
                         ids=lambda path: f"{path.parent.name}/{path.name}")
def test_a_shipped_config_validates(path):
    config = SCHEMAS[path.parent.name].model_validate(read_yaml(path))
    if isinstance(config, UnlearningStudyConfig):
        from lethe.unlearning.study import cell_config, study_methods

        for domain in config.domains:  # each run's settings, the method's own arguments included
            for method in study_methods(config):
                cell_config(config, domain, method)
