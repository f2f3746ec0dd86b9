import pytest

from lethe.config import DataBuildConfig, PretrainConfig, parse_overrides, read_yaml, resolve
from lethe.errors import LetheError
from lethe.training.pretrain import pretrain_config


def test_unknown_key_is_refused_and_named():
    with pytest.raises(LetheError, match="unknown config key 'train.lrr'"):
        resolve(PretrainConfig, {"train": {"lrr": 0.1}})


def test_wrong_type_names_the_field():
    with pytest.raises(LetheError, match="sizes.forget"):
        resolve(DataBuildConfig, {"sizes": {"forget": "many"}})


def test_overrides_are_typed_and_nested():
    assert parse_overrides(["train.lr=1e-3", "splits=[code/forget, code/retain]", "arch.layers=3"]) == {
        "train": {"lr": 1e-3}, "splits": ["code/forget", "code/retain"], "arch": {"layers": 3}}
    with pytest.raises(LetheError, match="key=value"):
        parse_overrides(["train.lr"])


def test_preset_then_file_then_overrides():
    config = pretrain_config("micro", {"train": {"lr": 0.5}}, {"arch": {"layers": 3}})
    assert config.arch.hidden_size == 64 and config.arch.layers == 3
    assert config.train.lr == 0.5 and config.train.epochs == 6
    with pytest.raises(LetheError, match="unknown preset"):
        pretrain_config("huge")


def test_arch_heads_must_divide_hidden_size():
    with pytest.raises(LetheError, match="not divisible"):
        resolve(PretrainConfig, {"arch": {"hidden_size": 66, "heads": 4}})


def test_yaml_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(LetheError, match="not valid YAML") as caught:
        read_yaml(bad)
    assert "\n" not in str(caught.value)
    with pytest.raises(LetheError, match="does not exist"):
        read_yaml(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(LetheError, match="mapping"):
        read_yaml(listed)
