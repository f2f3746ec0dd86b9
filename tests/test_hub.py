"""Hugging Face Hub names for models and data sets, through the Hub libraries' own cache (no network here: the
tests write the cache layout a download would leave), and an `import lethe` without side effects."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lethe.cli import main

COMMIT = "0123456789abcdef0123456789abcdef01234567"
HUB_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS",
                 "TRANSFORMERS_NO_ADVISORY_WARNINGS")


def test_import_leaves_the_environment_alone():
    env = {k: v for k, v in os.environ.items() if k not in HUB_VARIABLES}
    probe = ("import os, sys; before = dict(os.environ); import lethe; "
             "changed = sorted(k for k in {*before, *os.environ} if before.get(k) != os.environ.get(k)); "
             "sys.exit(f'import lethe changed {changed}' if changed else 0)")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_offline_flag_keeps_a_command_off_the_network(data_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in HUB_VARIABLES} | {"HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-m", "lethe.cli", "--offline", "eval", "ppl", "--model",
                           "lethe-test/absent", "--data", str(data_dir), "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"lethe: error: model 'lethe-test/absent' is neither a directory nor in the Hugging Face cache "
        f"({tmp_path / 'hf' / 'hub'}), and HF_HUB_OFFLINE is set: download it once with a network "
        "(`hf download lethe-test/absent`) or unset HF_HUB_OFFLINE")


def write_hub_cache(hub_cache: Path, repo: str, model_dir: Path, commit: str = COMMIT) -> Path:
    """The layout `snapshot_download` leaves: models--org--name/{refs/main, snapshots/<commit>/files}."""
    root = hub_cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    shutil.copytree(model_dir, snapshot)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch) -> Path:
    """This process's Hub cache pointed at an empty folder (huggingface_hub read HF_HOME on import)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def eval_ppl_results(out: Path) -> tuple[dict, dict]:
    """(env.json's hub record, code/forget's perplexity results) of an `eval ppl` run."""
    return (json.loads((out / "env.json").read_text())["hub"],
            json.loads((out / "results.json").read_text())["splits"]["code/forget"])


def test_hub_model_loads_from_the_cache_offline_and_records_its_commit(micro_run, data_dir, tmp_path, capsys):
    """The whole path a user takes: a fresh process whose HF_HOME holds the model, offline."""
    home = tmp_path / "hf"
    write_hub_cache(home / "hub", "lethe-test/micro", micro_run / "model")
    split = ["--data", str(data_dir), "--splits", "code/forget"]
    assert main(["eval", "ppl", "--model", str(micro_run), *split, "--out", str(tmp_path / "local")]) == 0
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    out = tmp_path / "hub-run"
    done = subprocess.run([sys.executable, "-m", "lethe.cli", "eval", "ppl", "--model", "lethe-test/micro", *split,
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    recorded, ppl = eval_ppl_results(out)
    assert recorded == {"lethe-test/micro": {"repo": "lethe-test/micro", "revision": "main", "commit": COMMIT}}
    assert ppl == pytest.approx(eval_ppl_results(tmp_path / "local")[1])
    assert main(["report", str(out)]) == 0
    assert f"Hugging Face Hub: lethe-test/micro at commit {COMMIT}" in (out / "report.md").read_text()


def test_hub_model_pinned_to_a_commit(micro_run, data_dir, empty_hub_cache, tmp_path):
    write_hub_cache(empty_hub_cache, "lethe-test/micro", micro_run / "model")
    name = f"lethe-test/micro@{COMMIT}"
    assert main(["eval", "ppl", "--model", name, "--data", str(data_dir), "--splits", "code/forget",
                 "--out", str(tmp_path / "pinned")]) == 0
    recorded, _ = eval_ppl_results(tmp_path / "pinned")
    assert recorded[name] == {"repo": "lethe-test/micro", "revision": COMMIT, "commit": COMMIT}
    assert main(["eval", "ppl", "--model", "lethe-test/micro@v9", "--data", str(data_dir),
                 "--out", str(tmp_path / "unknown")]) == 2


def test_pretraining_reuses_a_hub_models_tokenizer_and_records_its_commit(micro_run, data_dir, empty_hub_cache,
                                                                           tmp_path):
    """`tokenizer_from: org/name`: only the tokenizer's files are needed (a repo's weights are not read)."""
    snapshot = write_hub_cache(empty_hub_cache, "lethe-test/tokenizer", micro_run / "model")
    for weights in snapshot.glob("*.safetensors"):
        weights.unlink()
    out = tmp_path / "pretrained"
    assert main(["pretrain", "--preset", "micro", "--data", str(data_dir), "--set", "train.epochs=1",
                 "--set", "tokenizer_from=lethe-test/tokenizer", "--out", str(out)]) == 0
    recorded = json.loads((out / "env.json").read_text())["hub"]
    assert recorded["lethe-test/tokenizer"] == {"repo": "lethe-test/tokenizer", "revision": "main", "commit": COMMIT}
    assert (json.loads((out / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
            == json.loads((micro_run / "model" / "tokenizer.json").read_text())["model"]["vocab"])


def test_missing_hub_model_offline_is_one_line(empty_hub_cache, data_dir, tmp_path, capsys):
    assert main(["--offline", "eval", "ppl", "--model", "lethe-test/absent", "--data", str(data_dir),
                 "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "'lethe-test/absent'" in error and "HF_HUB_OFFLINE" in error
    assert str(empty_hub_cache) in error


def test_hub_repo_with_only_pickled_weights_is_refused(micro_run, empty_hub_cache, data_dir, tmp_path, capsys):
    snapshot = write_hub_cache(empty_hub_cache, "lethe-test/pickled", micro_run / "model")
    for weights in snapshot.glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    assert main(["eval", "ppl", "--model", "lethe-test/pickled", "--data", str(data_dir),
                 "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "no .safetensors weights" in error and "'lethe-test/pickled'" in error


def test_a_local_directory_shaped_like_a_hub_name_stays_local(micro_run, tmp_path, monkeypatch):
    from lethe.models import resolve_model_path

    monkeypatch.chdir(tmp_path)
    shutil.copytree(micro_run / "model", tmp_path / "org" / "name")
    assert resolve_model_path("org/name") == Path("org/name")


def write_dataset_repo(root: Path, config: str, splits: dict[str, list[str]]) -> None:
    """A data set repository as on the Hub: parquet files per split, declared in the README's `configs`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = ["---", "configs:", f"- config_name: {config}", "  data_files:"]
    for split, texts in splits.items():
        (root / config).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"text": texts, "title": [f"{split} {i}" for i in range(len(texts))]}),
                       root / config / f"{split}-00000-of-00001.parquet")
        lines += [f"  - split: {split}", f"    path: {config}/{split}-*.parquet"]
    (root / "README.md").write_text("\n".join([*lines, "---", ""]))


@pytest.fixture
def muse_like(data_dir, tmp_path, monkeypatch) -> dict[str, list[str]]:
    """MUSE-News's `raw` layout (forget, retain1, holdout) holding real text, where `load_dataset` finds the name
    `muse-bench/MUSE-News` without a network: a repository directory of that name (cache in tmp_path)."""
    import datasets

    from lethe.data.splits import load_splits

    splits = load_splits(data_dir, ["code/forget", "code/retain", "code/approximate"])
    texts = {raw: [doc.text for doc in splits[f"code/{ours}"]]
             for raw, ours in {"forget": "forget", "retain1": "retain", "holdout": "approximate"}.items()}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    write_dataset_repo(tmp_path / "muse-bench" / "MUSE-News", "raw", texts)
    return texts


def test_muse_recipe_maps_the_hub_layout_onto_lethes_splits(muse_like, tmp_path):
    import yaml

    from lethe.config import DataBuildConfig
    from lethe.data.build import build_data
    from lethe.data.splits import load_splits

    recipe = yaml.safe_load((Path(__file__).parents[1] / "configs" / "data" / "muse-news.yaml").read_text())
    out = tmp_path / "built"
    results = build_data(DataBuildConfig(**{**recipe, "out": out, "general": False}))
    built = load_splits(out)
    for ours, raw in {"forget": "forget", "retain": "retain1", "approximate": "holdout"}.items():
        assert sorted(doc.text for doc in built[f"news/{ours}"]) == sorted(muse_like[raw])
        assert results["splits"][f"news/{ours}"]["documents"] == len(muse_like[raw])
    hub = json.loads((out / "env.json").read_text())["hub"]
    assert {entry["split"] for entry in hub.values()} == {"forget", "retain1", "holdout"}
    assert {entry["repo"] for entry in hub.values()} == {"muse-bench/MUSE-News"}


def test_hub_data_set_as_a_document_set_with_its_fields(muse_like):
    from lethe.data.splits import load_set

    documents, cached = load_set("hf:muse-bench/MUSE-News:raw?split=holdout&text_field=title,text", Path("."))
    assert [doc.text for doc in documents] == [f"holdout {i}\n{text}" for i, text in enumerate(muse_like["holdout"])]
    assert cached.is_file() and cached.suffix == ".arrow"


@pytest.mark.parametrize(("spec", "message"), [
    ("hf:muse-bench/MUSE-News:raw?split=forget&text_field=body", "no column 'body'"),
    ("hf:muse-bench/MUSE-News:raw?split=retain9", "cannot be loaded"),
    ("hf:muse-bench/MUSE-News:raw?splits=forget", "unknown option 'splits'"),
    ("hf:not a name", "not a Hugging Face data set name"),
    ("hf:lethe-test/absent", "not in the Hugging Face cache"),
])
def test_bad_hub_data_set_is_one_line(muse_like, spec, message):
    from lethe.data.splits import load_set
    from lethe.errors import LetheError

    with pytest.raises(LetheError, match=message) as refused:
        load_set(spec, Path("."))
    assert "\n" not in str(refused.value)
