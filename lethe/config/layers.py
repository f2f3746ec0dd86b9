"""Config layers → one validated config: YAML files, named flags and `--set` overrides merged over a schema's
defaults, each value remembering which layer set it (written as a comment into the run's config.yaml)."""

from __future__ import annotations

import contextlib
import copy
import math
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lethe.errors import LetheError, one_line

Schema = TypeVar("Schema", bound=BaseModel)


class Layer(dict):
    """A mapping of config values and where they came from (`--set`, a config file, a flag)."""

    def __init__(self, source: str, values: dict[str, Any] | None = None) -> None:
        super().__init__(values or {})
        self.source = source


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                raise yaml.constructor.ConstructorError(None, None, "a key is itself a list or mapping",
                                                        key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, in one line (YAML's own message spans lines and quotes the text)."""
    mark = getattr(exc, "problem_mark", None)
    if getattr(exc, "problem", None) and mark is not None:
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return one_line(exc)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise LetheError(f"config file {path} does not exist")
    if path.is_dir():
        raise LetheError(f"config file {path} is a directory; name a YAML file")
    if not path.is_file():  # a pipe or a device (/dev/zero) would block or never end
        raise LetheError(f"config file {path} is not a regular file; name a YAML file")
    try:
        loaded = load_yaml(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise LetheError(f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise LetheError(f"config file {path} is not valid YAML: {yaml_problem(exc)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise LetheError(f"config file {path} must hold a mapping at the top level")
    return loaded


def _scalar(key: str, raw: str) -> Any:
    if not raw:
        return None
    try:
        value = load_yaml(raw)
    except yaml.YAMLError as exc:
        raise LetheError(f"--set {key}: {raw!r} is not a YAML value ({yaml_problem(exc)}); quote text, write lists "
                         "as [a, b]") from None
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`train.lr=1e-3` → {"train": {"lr": 0.001}}; values are parsed as YAML scalars/lists."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise LetheError(f"override {pair!r} is not of the form key=value")
        if not all(key.split(".")):
            raise LetheError(f"override {pair!r}: the key {key!r} has an empty part; write keys as train.lr")
        value = _scalar(key, raw)
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise LetheError(f"override {pair!r} sets a key inside {part!r}, which another override sets to a "
                                 "value")
        node[leaf] = value
    return result


def _leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        paths += _leaves(value, path + ".") if isinstance(value, dict) and value else [path]
    return paths


def command_defaults(schema: type[BaseModel], prefix: str = "") -> list[str]:
    """Paths the schema itself sets in its nested sections beyond those sections' own defaults (e.g. attack
    mia's chunk.max_chunks_per_doc: 1): what `Strict` keeps when a layer sets a sibling key."""
    paths = []
    for name, field in schema.model_fields.items():
        if field.default_factory is None:
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            paths += _leaves(default.model_dump(mode="json", exclude_unset=True), f"{prefix}{name}.")
            paths += command_defaults(type(default), f"{prefix}{name}.")
    return paths


def _sources(schema: type[BaseModel], merged: dict[str, Any], layers: list[dict[str, Any]]) -> dict[str, str]:
    """Which layer set each value: the last one that names it (or a section above it)."""
    named = [("command default", dict.fromkeys(command_defaults(schema)))]
    implied = getattr(schema, "implied_layers", lambda _: [])(merged)
    named += [(source, dict.fromkeys(_leaves(values))) for source, values in implied]
    named += [(getattr(layer, "source", "given"), dict.fromkeys(_leaves(layer))) for layer in layers]
    sources: dict[str, str] = {}
    for source, paths in named:
        for path in paths:
            for earlier in [p for p in sources if p == path or p.startswith(path + ".")]:
                del sources[earlier]
            sources[path] = source
    return sources


def resolve(schema: type[Schema], *layers: dict[str, Any]) -> Schema:
    """Merge layers (file, flags, overrides: later wins) over the schema's defaults and validate; a layer changes
    only the keys it names."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    try:
        config = schema.model_validate(merged)
    except ValidationError as exc:
        raise LetheError(describe_validation_error(exc)) from None
    except (TypeError, AttributeError, KeyError) as exc:  # a validator met a value of a shape it did not expect
        raise LetheError(f"invalid config: a value has the wrong shape ({one_line(exc)}); see docs/config.md") from None
    if hasattr(config, "_sources"):
        config._sources = _sources(schema, merged, list(layers))
    return config


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "config"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown config key {where!r}")
        else:
            problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "invalid config: " + "; ".join(problems)


def _inline(value: Any) -> str:
    text = yaml.safe_dump([value], default_flow_style=True, width=math.inf, sort_keys=False).strip()
    return text[1:-1]


def _annotated(values: dict[str, Any], sources: dict[str, str], prefix: str = "", indent: str = "") -> list[str]:
    lines = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{_inline(key)}:")
            lines += _annotated(value, sources, path + ".", indent + "  ")
            continue
        line = f"{indent}{_inline(key)}: {_inline(value)}"
        source = next((sources[p] for p in _prefixes(path) if p in sources), None)
        lines.append(f"{line}  # {source}" if source else line)
    return lines


def _prefixes(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def to_yaml(config: BaseModel) -> str:
    """The resolved config; values that are not the schema's own defaults say which layer set them."""
    values = config.model_dump(mode="json")
    sources = getattr(config, "_sources", None)
    if not sources:
        return yaml.safe_dump(values, sort_keys=False)
    header = "# resolved config; a comment names the layer that set the value (none: the schema's default)"
    return "\n".join([header, *_annotated(values, sources)]) + "\n"


def config_changes(recorded: dict, config: BaseModel) -> str:
    """What differs between a run's recorded config and `config`, as `key: old → new` (empty: nothing). The record is
    read through today's schema first, so a key the schema gained since the run started (with its default) is no
    change: upgrading Lethe does not strand a study half done."""
    with contextlib.suppress(ValidationError, LetheError):  # one today's schema refuses is compared as written
        recorded = type(config).model_validate(recorded).model_dump(mode="json")
    changes = _differences(recorded, config.model_dump(mode="json"))
    return ", ".join(changes[:3]) + (f" and {len(changes) - 3} more" if len(changes) > 3 else "")


def _differences(old: Any, new: Any, key: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for name in {**old, **new}
                for change in _differences(old.get(name), new.get(name), f"{key}.{name}" if key else name)]
    return [] if old == new else [f"{key or 'config'}: {old!r} → {new!r}"]
