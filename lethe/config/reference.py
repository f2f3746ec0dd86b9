"""Markdown references rendered from the code: every command's typed config, and the Python API.

docs/config.md and docs/api.md are this module's output (`lethe config reference [--api] --out ...`);
a test compares the committed files with a fresh rendering, so they cannot go stale.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from lethe.config.base import PRESETS, PretrainConfig, Strict, lethe_home
from lethe.config.demo import DEMO, DemoConfig


def commands() -> dict[str, type[Strict]]:
    """Which schema each command validates its --config file, named flags and --set overrides against, from the
    recipe registry; commands sharing a schema share a row ("lethe experiment unlearning, lethe sweep")."""
    from lethe.recipes import in_flow_order

    names: dict[type[Strict], list[str]] = {}
    for recipe in in_flow_order():
        if recipe.schema is not None:
            names.setdefault(recipe.schema, []).append(f"lethe {recipe.command}")
    return {", ".join(commands): schema for schema, commands in names.items()}


# Schemas whose defaults live in a dict merged under the user's layers, not in their fields.
BUILT_IN_DEFAULTS: dict[type[Strict], tuple[str, dict]] = {
    PretrainConfig: ("Presets (`preset`), each filling in the fields a config leaves out:", PRESETS),
    DemoConfig: ("The demo's recipe, merged key by key under the layers you give:", DEMO),
}

HEADER = """# Config reference

Generated from the typed schemas in `lethe/config/` by `lethe config reference --out docs/config.md`;
do not edit by hand (a test fails when this file and the schemas disagree).

Every command reads its settings in this order, later layers winning: the schema's defaults (for
`lethe pretrain`, then its preset), `--config FILE` (YAML), the named flags (`--model`, `--out`, ...),
then `--set key=value` overrides. Nested keys are dotted (`--set train.lr=1e-4`), values are YAML
(`--set 'splits=[code/forget,code/retain]'`, `--set train.max_steps=null`). An unknown key is
refused by name. `lethe retrain` takes no config: it repeats a `lethe pretrain` run's own.
In Python, each schema is a pydantic model: `lethe.UnlearnConfig(model="runs/tiny", method="npo")`.
"""


def _constraints(field) -> str:
    words = {annotated_types.Ge: ("≥", "ge"), annotated_types.Gt: (">", "gt"),
             annotated_types.Le: ("≤", "le"), annotated_types.Lt: ("<", "lt")}
    parts = []
    for item in field.metadata:
        if type(item) in words:
            symbol, attribute = words[type(item)]
            parts.append(f"{symbol} {getattr(item, attribute)}")
        elif isinstance(item, annotated_types.MinLen):
            parts.append(f"at least {item.min_length} item" + ("s" if item.min_length > 1 else ""))
    return ", ".join(parts)


def type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in args)
    if origin is typing.Annotated:  # an item's own constraints, e.g. list[Annotated[float, Field(gt=0)]]
        constraints = ", ".join(_constraints(item) for item in args[1:] if isinstance(item, FieldInfo))
        return type_name(args[0]) + (f" ({constraints})" if constraints else "")
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(arg) for arg in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(arg) for arg in args)}]"
    if isinstance(annotation, type) and issubclass(annotation, Strict):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _value(value: Any) -> str:
    if isinstance(value, Path):
        home = lethe_home()
        value = f"$LETHE_HOME/{value.relative_to(home)}" if value.is_relative_to(home) else str(value)
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1_000_000, allow_unicode=True)
    return text.strip().removesuffix("...").strip()


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        changed = value.model_dump(mode="json", exclude_defaults=True)
        return f"`{_value(changed)}`" if changed else "its defaults"
    return f"`{_value(value)}`"


def _nested(annotation: Any) -> list[type[Strict]]:
    if isinstance(annotation, type) and issubclass(annotation, Strict):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _nested(arg)]


def _describe(text: str | None, linked: frozenset[str] = frozenset()) -> str:
    text = " ".join((text or "").split()).replace("|", "\\|").replace("<", "&lt;")
    return re.sub(r"\b[A-Z]\w*Config\b", lambda m: f"[{m[0]}](#{m[0].lower()})" if m[0] in linked else m[0], text)


def _summary(obj) -> str:
    # a class's own docstring only: pydantic models would otherwise show BaseModel's
    doc = (obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__) or ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def _fields(model: type[Strict]) -> list[str]:
    """The schema's own fields first, then inherited ones (pydantic lists a parent's first)."""
    own = model.__dict__.get("__annotations__", {})
    return sorted(model.model_fields, key=lambda name: name not in own)


def _row(name: str, field, linked: frozenset[str], default: str | None = None, owner: str = "") -> str:
    kind = type_name(field.annotation)
    if limits := _constraints(field):
        kind += f" ({limits})"
    description = (f"{owner}: " if owner else "") + _describe(field.description, linked)
    return f"| `{name}` | {kind} | {default or _default(field)} | {description} |"


def _declared_elsewhere(model: type[Strict]) -> list[tuple[str, str, Any]]:
    """Keys a schema takes that are declared by the units that use them: each unlearning method's own arguments."""
    from lethe.config.base import MethodArgs

    if model is not MethodArgs:
        return []
    from lethe.unlearning.methods import methods

    return [(name, key, field) for name in methods for key, field in methods.get(name).Args.model_fields.items()]


def _section(model: type[Strict], used_by: list[str], linked: frozenset[str]) -> str:
    lines = [f"## {model.__name__}", ""]
    if summary := _summary(model):
        lines += [summary, ""]
    lines += [f"Used by {', '.join(used_by)}.", "", "| key | type | default | description |", "|---|---|---|---|"]
    built_in = BUILT_IN_DEFAULTS.get(model, ("", {}))[1]
    lines += [_row(name, model.model_fields[name], linked, "built in (below)" if name in built_in else None)
              for name in _fields(model)]
    lines += [_row(key, field, linked, owner=f"`{method}` only") for method, key, field in _declared_elsewhere(model)]
    if model in BUILT_IN_DEFAULTS:
        caption, values = BUILT_IN_DEFAULTS[model]
        text = yaml.safe_dump(values, sort_keys=False, default_flow_style=None, width=120).strip()
        lines += ["", caption, "", "```yaml", text, "```"]
    return "\n".join(lines) + "\n"


def render_config_reference() -> str:
    """docs/config.md: a table of commands, then one section per schema (nested ones once, after)."""
    used_by: dict[type[Strict], list[str]] = {}
    table_rows = commands()
    for command, model in table_rows.items():
        used_by.setdefault(model, []).extend(f"`{name}`" for name in command.split(", "))
    order = list(used_by)
    for model in order:  # grows while walking: breadth-first over nested schemas
        for name, field in model.model_fields.items():
            for nested in _nested(field.annotation):
                if nested not in used_by:
                    order.append(nested)
                used_by.setdefault(nested, []).append(f"[{model.__name__}](#{model.__name__.lower()})`.{name}`")
    table = ["| command | schema |", "|---|---|"]
    table += [f"| `{command.replace(', ', '`, `')}` | {type_name(model)} |" for command, model in table_rows.items()]
    linked = frozenset(model.__name__ for model in order)
    sections = [_section(model, used_by[model], linked) for model in order]
    return "\n".join([HEADER, *table, "", *sections]).rstrip() + "\n"


def _signature(function) -> str:
    text = str(inspect.signature(function))
    text = re.sub(r"(: |-> )'([^']*)'", r"\1\2", text)  # postponed annotations print as quoted strings
    return re.sub(r"\b(?:lethe|pathlib|typing)\.(?:\w+\.)*(\w+)", r"\1", text)


def render_api_reference() -> str:
    """docs/api.md: every name in `lethe.__all__` with its signature and first docstring paragraph."""
    import lethe

    lines = ["# Python API", "",
             "Generated from `lethe.__all__` by `lethe config reference --api --out docs/api.md`; do not edit by",
             "hand. Each command of the CLI is one function taking its typed config (see [config.md](config.md))",
             "and, for commands that write a run directory, `out`; keyword arguments are the CLI's switches",
             "(`overwrite=True`, `resume=True`). Each returns the dict the run saves as `results.json`.", "",
             "| name | signature | what it does |", "|---|---|---|"]
    for name in sorted(lethe.__all__, key=lambda n: (isinstance(getattr(lethe, n), type), n.lower())):
        obj = getattr(lethe, name)
        if isinstance(obj, type) and issubclass(obj, Strict):
            signature, summary = f"[schema](config.md#{name.lower()})", _summary(obj)
        elif isinstance(obj, type):
            signature, summary = "class", _summary(obj)
        else:
            signature, summary = f"`{_signature(obj)}`".replace("|", "\\|"), _summary(obj)
        lines.append(f"| `lethe.{name}` | {signature} | {_describe(summary)} |")
    return "\n".join(lines) + "\n"
