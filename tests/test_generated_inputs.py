"""Generated hostile input (a seeded generator): every recipe's schema against generated `--set` values and config
files, and the real CLI on the micro model against generated commands. Each ends in a config (exit 0) or one line
in Lethe's words: no traceback, no exception name, and nothing written outside --out (issue 25)."""

from __future__ import annotations

import contextlib
import io
import random
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from lethe.cli import main
from lethe.config import parse_overrides, read_yaml, resolve
from lethe.errors import LetheError
from lethe.recipes import in_flow_order

SEED = 25
EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception|Warning)\b|Traceback")

# values as typed after `--set key=`: numbers out of range, non-finite, the wrong type, YAML that does not parse
RAW_VALUES = ["", "0", "-1", "1", "3", "1e30", "-1e30", "1e-30", ".nan", ".inf", "-.inf", "nan", "inf", "true", "no",
              "null", "~", "[]", "[1, 2]", "[0,500]", "{}", "{a: 1}", "{a: 1, a: 2}", "'text'", "text", "[unclosed",
              "'open", "a: b: c", "99999999999999999999", "0x10", "1_000", "é\u0301", "\x00", "- a", "&a [*a]",
              "!!python/object:os.system", "code/forget", "[code/forget, code/forget]", "../x", "/", "1.5", "2**40",
              "%", "@x", "`x`", "=x", "a=b", "[[[]]]", "{{}}"]
KEYS_ALSO_TRIED = ["", ".", "a..b", "nope", "train.nope", "train..lr", "train.lr.x", "Train.lr", "train.lora.x"]


def dotted_keys(schema: type[BaseModel], prefix: str = "") -> list[str]:
    """Every key of a schema, nested sections included (train.guard.max_loss)."""
    keys = []
    for name, field in schema.model_fields.items():
        keys.append(prefix + name)
        for kind in typing.get_args(field.annotation) or (field.annotation,):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                keys += dotted_keys(kind, f"{prefix}{name}.")
    return keys


def schemas() -> list[tuple[str, type[BaseModel]]]:
    return [(recipe.command, recipe.schema) for recipe in in_flow_order() if recipe.schema is not None]


def required(schema: type[BaseModel]) -> dict[str, str]:
    """Placeholders for the keys a schema cannot do without, so generated values reach the other validators."""
    return {name: "placeholder" for name, field in schema.model_fields.items() if field.is_required()}


def assert_one_line_in_lethes_words(message: str) -> None:
    assert message and "\n" not in message and not EXCEPTION_NAME.search(message), message


def test_generated_overrides_against_every_schema():
    rng = random.Random(SEED)
    tried = accepted = 0
    for command, schema in schemas():
        keys = dotted_keys(schema) + KEYS_ALSO_TRIED
        for _ in range(60):
            pairs = [f"{rng.choice(keys)}={rng.choice(RAW_VALUES)}" for _ in range(rng.randint(1, 3))]
            tried += 1
            try:
                resolve(schema, required(schema), parse_overrides(pairs))
                accepted += 1
            except LetheError as exc:
                assert_one_line_in_lethes_words(str(exc))
            except Exception as exc:  # noqa: BLE001 (what this test looks for)
                pytest.fail(f"{command} {pairs}: {type(exc).__name__}: {exc}")
    assert tried >= 1000 and 0 < accepted < tried, (tried, accepted)


def yaml_document(rng: random.Random, keys: list[str]) -> bytes:
    lines = []
    for _ in range(rng.randint(0, 4)):
        *parents, leaf = rng.choice(keys).split(".")
        indent = ""
        for part in parents:
            lines.append(f"{indent}{part}:")
            indent += "  "
        lines.append(f"{indent}{leaf}: {rng.choice(RAW_VALUES)}")
    text = "\n".join(lines).encode("utf-8", "surrogateescape")
    damage = rng.random()
    if damage < 0.1:
        return b"\xff\xfe" + text  # not UTF-8
    if damage < 0.2:
        return text + b"\n" + text  # every key twice
    if damage < 0.25:
        return b"- a list\n- not a mapping\n"
    return text


def test_generated_config_files_against_every_schema(tmp_path):
    rng = random.Random(SEED + 1)
    for command, schema in schemas():
        keys = dotted_keys(schema)
        for i in range(8):
            path = tmp_path / f"{command.replace(' ', '_')}_{i}.yaml"
            path.write_bytes(yaml_document(rng, keys))
            try:
                resolve(schema, required(schema), read_yaml(path))
            except LetheError as exc:
                assert_one_line_in_lethes_words(str(exc))
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"{command} {path.read_bytes()!r}: {type(exc).__name__}: {exc}")


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under the roots, with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in roots for p in root.rglob("*") if p.is_file()}


CLI_KEYS = {"batch_tokens": ["64", "128", "0", "-5", "1e30", ".nan", "[1"], "chunk.length": ["8", "32", "7", "x"],
            "chunk.min_tokens": ["2", "1", "1000"], "chunk.max_chunks_per_doc": ["1", "0", "null"],
            "splits": ["[code/forget]", "[]", "[nope/forget]", "[../../etc]", "code/forget"],
            "dtype": ["float32", "bfloat16", "int8"], "trust_remote_code": ["false", "yes", "2"],
            "model": ["/nonexistent", "''", "smollm2-135m-nope"], "data": ["/nonexistent", "''"]}


def generated_command(rng: random.Random, micro_run: Path, data_dir: Path, sandbox: Path, i: int) -> list[str]:
    command = rng.choice([["eval", "ppl"], ["eval", "bpb"]])
    argv = [*command, "--model", str(micro_run), "--data", str(data_dir), "--splits", "code/forget",
            "--set", "batch_tokens=128"]
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        key = rng.choice(list(CLI_KEYS))
        argv += ["--set", f"{key}={rng.choice(CLI_KEYS[key])}"]
    out = rng.choice([f"run{i}", f"run{i}", "", "afile", "afile/under", "x" * 300, str(micro_run), str(data_dir),
                      f"deep/{i}/run"])
    argv += ["--out", str(sandbox / out) if out and not out.startswith("/") else out]
    if rng.random() < 0.2:
        config = sandbox / f"config{i}.yaml"
        config.write_bytes(yaml_document(rng, list(CLI_KEYS)))
        argv += ["--config", str(config)]
    if rng.random() < 0.1:
        argv += ["--overwrite"]
    return argv


def test_generated_commands_through_the_cli(micro_run, data_dir, tmp_path, monkeypatch):
    """60 generated commands on the micro model: exit 0, or exit 2 with one line; files change only under --out."""
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "afile").write_text("a file where a directory is expected")
    monkeypatch.chdir(sandbox)
    rng = random.Random(SEED + 2)
    outcomes = []
    for i in range(60):
        argv = generated_command(rng, micro_run, data_dir, sandbox, i)
        out = Path(argv[argv.index("--out") + 1]).resolve() if argv[argv.index("--out") + 1] else None
        before = snapshot(micro_run, data_dir, sandbox)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        errors = [line for line in err.getvalue().splitlines() if line.startswith("lethe: error:")]
        assert code in (0, 2), (argv, err.getvalue())
        if code == 2:
            assert len(errors) == 1, (argv, err.getvalue())
            assert_one_line_in_lethes_words(errors[0])
        after = snapshot(micro_run, data_dir, sandbox)
        changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
        changed -= {p for p in changed if Path(p).name.startswith("config") and Path(p).parent == sandbox}
        outside = [p for p in changed if out is None or not Path(p).resolve().is_relative_to(out)]
        assert not outside, (argv, outside)
        outcomes.append(code)
    assert outcomes.count(0) >= 5 and outcomes.count(2) >= 5, outcomes
