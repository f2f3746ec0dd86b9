"""Recipes: each `lethe` command is one unit, registered once, from which everything else is derived.

A recipe names its config schema, the function that runs it, the flags that set config keys, what it
prints when it finishes and the report section it contributes, and whether it may run under
`accelerate launch`. The CLI (`lethe.cli`), the Python API (`lethe.<name>`), the config reference
(docs/config.md), the multi-process rule and `lethe report` all read this registry. Adding a command
is one new module in this package (see docs/architecture.md).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lethe.errors import LetheError
from lethe.registry import Registry

recipes: Registry[Recipe] = Registry("command")

# where each group of commands sits in `lethe --help`: the order data flows in; other groups follow
GROUPS = {"assets": "", "data": "build data splits", "pretrain": "", "target": "", "retrain": "", "unlearn": "",
          "eval": "evaluate models", "attack": "privacy attacks", "poison": "", "screen": "", "finetune": "",
          "experiment": "whole studies", "sweep": "", "config": "the typed config schemas", "report": "", "demo": ""}

DATA = "data directory from `lethe data build`"
RESUME = {"resume": "continue an interrupted run in --out"}
STUDY_RESUME = {"resume": "continue: finished runs are read back, not redone"}
ACCEPT_DATA_CHANGE = {"accept_data_change": "with --resume: continue although the data changed since the run "
                      "started (recorded in the run)"}


@dataclass(frozen=True)
class Flag:
    """A named flag, `--name VALUE`, that sets one config key (a layer between --config and --set)."""

    help: str
    key: str | None = None  # the config key it sets; default: the flag's own name
    parse: Callable[[str], Any] | None = None  # text → value; default: read as YAML, like --set
    value: Any = None  # set: a switch (`--name`, no value) that sets the key to this

    def layer(self, name: str, text: Any) -> dict[str, Any]:
        from lethe.config import parse_overrides

        key = self.key or name
        if self.value is not None:
            return {key: self.value}
        if self.parse is None:
            return parse_overrides([f"{key}={text}"])
        return {key: self.parse(text)}


# a study's independent runs at once; read as YAML like any flag, so the schema's own check words a bad value
JOBS = Flag("independent runs at once, one thread each (one GPU each where there are several)")


def comma_list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


@dataclass(frozen=True)
class Recipe:
    """One command. `run(config, out, **switches)` returns the dict the run saves as results.json."""

    command: str  # as typed after `lethe`, e.g. "attack mia"
    help: str
    run: Callable[..., Any]
    schema: type | None = None  # the typed config; None: the command takes no config (`lethe report`)
    flags: dict[str, Flag] = field(default_factory=dict)
    switches: dict[str, str] = field(default_factory=dict)  # on/off run options beyond --overwrite → help
    out: str = "run"  # "run": `out` is the run directory (--out); "none": the command writes no run of its own
    out_default: str | None = None  # --out when none is given; None: --out is required
    overwrite: bool = True  # takes --overwrite
    summary: Callable[[dict, Any, Path | None], None] | None = None  # prints the terminal summary
    report: Callable | None = None  # (RunRecord, Section) → None: fills the command's report section
    summarises_children: bool = False  # the report lists its sub-runs rather than expanding them
    multi_process: bool = False  # every step is written for `accelerate launch` (one process writes the run)
    api_name: str | None = None  # `lethe.<api_name>`; default: the command with spaces as underscores
    in_api: bool = True  # also a function of the Python API
    arguments: Callable[[argparse.ArgumentParser], None] | None = None  # extra CLI arguments
    configure: Callable[[list], Any] | None = None  # config layers → config, where `resolve` is not enough
    main: Callable[[argparse.Namespace], None] | None = None  # the whole CLI handler, for commands outside the mould
    api_function: Callable[..., Any] | None = None  # the Python API, for commands outside the mould

    @property
    def name(self) -> str:
        return self.api_name or self.command.replace(" ", "_")

    def options(self) -> tuple[str, ...]:
        """The on/off keyword arguments of `run`: overwrite, resume, accept_data_change."""
        return (("overwrite",) if self.overwrite else ()) + tuple(self.switches)

    def layers(self, args: argparse.Namespace) -> list:
        """Config layers in precedence order: --config file, then named flags, then --set overrides."""
        from lethe.config import Layer, parse_overrides, read_yaml

        if args.config == "":
            raise LetheError("--config is empty; name a YAML file")
        layers = [Layer(f"--config {args.config}", read_yaml(Path(args.config)))] if args.config else []
        layers += [Layer(f"--{name.replace('_', '-')}", flag.layer(name, value))
                   for name, flag in self.flags.items() if (value := getattr(args, name, None)) is not None]
        layers.append(Layer("--set", parse_overrides(args.set)))
        return layers

    def execute(self, args: argparse.Namespace) -> None:
        """The CLI handler: flags and YAML → typed config → run → terminal summary."""
        if self.main is not None:
            self.main(args)
            return
        from lethe.config import resolve

        layers = self.layers(args)
        config = self.configure(layers) if self.configure else resolve(self.schema, *layers)
        options = {name: getattr(args, name) for name in self.options()}
        out = checked_out(args.out) if self.out == "run" else None
        results = self.run(config, out, **options) if out is not None else self.run(config, **options)
        if self.summary is not None and results:
            self.summary(results, config, out)

    def python_api(self) -> Callable[..., Any]:
        """`lethe.<name>`: the run function with `out` as any path, and a signature docs/api.md can show."""
        if self.api_function is not None:
            return self.api_function
        run, takes_out = self.run, self.out == "run"
        if takes_out:
            def api(config, out, **options):
                return run(config, Path(out), **options)
        else:
            def api(config, **options):
                return run(config, **options)

        parameters = [inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=self.schema)]
        if takes_out:
            parameters.append(inspect.Parameter("out", inspect.Parameter.POSITIONAL_OR_KEYWORD))
        parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool)
                       for name in self.options()]
        api.__signature__ = inspect.Signature(parameters, return_annotation=dict)
        api.__name__ = api.__qualname__ = self.name
        api.__doc__ = f"`lethe {self.command}`: {self.help}."
        api.__module__ = "lethe"
        return api


def checked_out(text: str) -> Path:
    """--out as a path, refused when empty (Run.start refuses one that is, holds or lies inside an input)."""
    if not text.strip():
        raise LetheError("--out is empty; name the run directory to write")
    return Path(text)


def lazy(module: str, function: str) -> Callable[..., Any]:
    """`module.function`, imported when first called: listing the commands must not load torch."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    call.__name__ = call.__qualname__ = function
    return call


def recipe(**fields: Any) -> Recipe:
    """Register a command (called once at the top level of its module in this package)."""
    entry = Recipe(**fields)
    recipes.register(entry.command)(entry)
    return entry


_loaded = False


def load_recipes() -> Registry[Recipe]:
    """Every command: importing this package's modules registers them (done once)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
    return recipes


def in_flow_order() -> list[Recipe]:
    """The commands in the order data flows through them (their group's place in GROUPS), then by name."""
    registry = load_recipes()
    rank = {group: position for position, group in enumerate(GROUPS)}
    return sorted((registry.get(name) for name in registry),
                  key=lambda r: (rank.get(r.command.split()[0], len(rank)), r.command))
