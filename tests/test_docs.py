"""The generated references in docs/ match the code, and the CLI writes them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import lethe
from lethe.cli import main
from lethe.config import Strict
from lethe.config.reference import commands, render_api_reference, render_config_reference, type_name

DOCS = Path(__file__).resolve().parents[1] / "docs"
REGENERATE = "regenerate with `lethe config reference --out docs/config.md` (and `--api --out docs/api.md`)"


def _schemas(cls=Strict) -> set[type]:
    from lethe.unlearning.methods import methods

    # an unlearning method's own `Args` sit beside its code (lethe/unlearning/), not in a command's schema; the
    # schema of all of them (methods.py) is rendered as MethodArgs' rows
    own = {methods.get(name).Args for name in methods}
    found = set()
    for sub in cls.__subclasses__():
        if sub.__module__.startswith("lethe.") and sub.__module__ != "lethe.unlearning.methods" and sub not in own:
            found.add(sub)
        found |= _schemas(sub)
    return found


def test_committed_config_reference_is_the_generated_one():
    assert (DOCS / "config.md").read_text(encoding="utf-8") == render_config_reference(), REGENERATE


def test_committed_api_reference_is_the_generated_one():
    assert (DOCS / "api.md").read_text(encoding="utf-8") == render_api_reference(), REGENERATE


def test_every_schema_and_every_field_is_documented():
    text = render_config_reference()
    schemas = _schemas()
    assert {c.__name__ for c in schemas} >= {"TrainConfig", "UnlearnConfig", "LeakageConfig", "DPConfig"}
    for schema in schemas:
        assert f"\n## {schema.__name__}\n" in text, f"{schema.__name__} is not reachable from the commands"
        section = text.split(f"\n## {schema.__name__}\n")[1].split("\n## ")[0]
        for name in schema.model_fields:
            assert f"| `{name}` |" in section, f"{schema.__name__}.{name} missing"
    for command in commands():
        assert f"`{command.split(', ')[0]}`" in text
    # each unlearning method's own arguments are rows of MethodArgs, named with their method
    from lethe.unlearning.methods import methods

    section = text.split("\n## MethodArgs\n")[1].split("\n## ")[0]
    for method in methods:
        for name in methods.get(method).Args.model_fields:
            assert re.search(rf"\| `{name}` \|.*\| `{method}` only: ", section), (method, name)


def test_reference_shows_types_defaults_and_constraints():
    text = render_config_reference()
    train = text.split("\n## TrainConfig\n")[1].split("\n## ")[0]
    assert "| `lr` | float (> 0) | `2.0e-05` | peak learning rate of AdamW |" in train
    assert "`cosine` \\| `linear`" in train
    # a nested default that differs from the schema's own shows only what differs
    finetune = text.split("\n## FinetuneConfig\n")[1].split("\n## ")[0]
    assert "| `train` | [TrainConfig](#trainconfig) | `{epochs: 3.0, lr: 5.0e-05, scheduler: linear}` |" in finetune
    # machine-independent: the data directory is shown relative to $LETHE_HOME
    assert "`$LETHE_HOME/data/default`" in text and str(Path.home()) not in text
    assert type_name(int | None) == "int \\| null"


def test_api_reference_lists_every_public_name():
    text = render_api_reference()
    for name in lethe.__all__:
        assert f"| `lethe.{name}` |" in text
    assert "`(config: UnlearnConfig, out, *, overwrite: bool = False) -> dict`" in text


@pytest.mark.parametrize("api", [False, True])
def test_cli_writes_the_reference(tmp_path, capsys, api):
    out = tmp_path / "sub" / "ref.md"
    assert main(["config", "reference", *(["--api"] if api else []), "--out", str(out)]) == 0
    expected = render_api_reference() if api else render_config_reference()
    assert out.read_text(encoding="utf-8") == expected
    assert main(["config", "reference", *(["--api"] if api else [])]) == 0
    assert capsys.readouterr().out.endswith(expected)


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero2"])
def test_accelerate_configs_load_and_use_only_known_options(name):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(DOCS.parent / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.num_machines == 1 and config.num_processes == 2
    known = {flag for action in launch_command_parser()._actions for flag in action.option_strings}
    plugin = {**(config.fsdp_config or {}), **(config.deepspeed_config or {})}
    assert plugin or name == "ddp"
    unknown = [key for key in plugin if f"--{key}" not in known]
    assert not unknown, f"{name}.yaml: accelerate launch has no option {unknown}"
    assert f"configs/accelerate/{name}.yaml" in (DOCS / "gpus.md").read_text(encoding="utf-8")
