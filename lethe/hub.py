"""Hugging Face Hub names: models as `org/name[@revision]`, data sets as `hf:org/name[:config][@revision]`.

Both go through the Hub libraries' own download and cache (huggingface_hub's `snapshot_download`, `datasets.
load_dataset`), so HF_HOME, HF_HUB_CACHE, HF_TOKEN and HF_HUB_OFFLINE mean what they mean everywhere else. The commit
each name resolved to is recorded in the env.json of the runs open in this process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lethe.errors import LetheError

# A repository id has one slash and no path syntax: `runs/tiny` is both, so a directory that exists wins (models.py).
_REPO = r"[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]"
HUB_MODEL = re.compile(rf"^(?P<repo>{_REPO})(?:@(?P<revision>[\w./-]+))?$")
HUB_DATASET = re.compile(rf"^hf:(?P<repo>{_REPO})(?::(?P<config>[\w.-]+))?(?:@(?P<revision>[\w./-]+))?$")
# What a model needs, never pickled weights (*.bin, *.pt): a repo that has only those arrives without weights and
# is refused like a local directory with only `.bin` files. `*.py` is custom code, run only with trust_remote_code.
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.py"]
TOKENIZER_FILES = [pattern for pattern in MODEL_FILES if pattern != "*.safetensors"]

def _record(name: str, entry: dict) -> None:
    """env.json's `hub` of the runs open now: a name resolved inside a run is part of that run's environment."""
    from lethe.runs import note_environment

    note_environment("hub", {name: entry})


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def is_hub_model(name: str) -> bool:
    return HUB_MODEL.match(name) is not None


def download_model(name: str, *, tokenizer_only: bool = False) -> Path:
    """The local snapshot of hub model `org/name[@revision]` (downloaded once into the Hub cache, then reused);
    `tokenizer_only`: its tokenizer and config files, no weights."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    match = HUB_MODEL.match(name)
    if match is None:
        raise LetheError(f"{name!r} is not a Hugging Face Hub model name (org/name or org/name@revision)")
    repo, revision = match["repo"], match["revision"]
    try:
        path = Path(snapshot_download(repo, revision=revision,
                                      allow_patterns=TOKENIZER_FILES if tokenizer_only else MODEL_FILES))
    except LocalEntryNotFoundError:
        if offline():
            raise LetheError(f"model {name!r} is neither a directory nor in the Hugging Face cache "
                             f"({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE is set: download it once with a network "
                             f"(`hf download {repo}`) or unset HF_HUB_OFFLINE") from None
        raise LetheError(f"model {name!r} is neither a directory nor in the Hugging Face cache, and the Hub could not "
                         "be reached") from None
    except GatedRepoError:
        raise LetheError(f"model {repo!r} is gated on the Hugging Face Hub: accept its terms there and log in "
                         "(`hf auth login` or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise LetheError(f"model {name!r} is neither a directory nor a model on the Hugging Face Hub (a private one "
                         "needs `hf auth login` or HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise LetheError(f"model {repo!r} has no revision {revision!r} on the Hugging Face Hub") from None
    except HfHubHTTPError as exc:
        raise LetheError(f"model {name!r}: the Hugging Face Hub answered {exc}".splitlines()[0]) from None
    if not tokenizer_only and not any(path.glob("*.safetensors")):
        raise LetheError(f"model {name!r} has no .safetensors weights on the Hugging Face Hub (pickled weights, "
                         "which can run code when loaded, are never downloaded): choose a repo or revision with "
                         "safetensors")
    # a snapshot's directory is named by its commit, whatever branch or tag the name asked for
    _record(name, {"repo": repo, "revision": revision or "main", "commit": path.name})
    return path


@dataclass(frozen=True)
class HubDataset:
    """`hf:org/name[:config][@revision][?split=train&text_field=text&id_field=id]`."""

    name: str
    repo: str
    config: str | None
    revision: str | None
    split: str = "train"
    text_fields: tuple[str, ...] = ("text",)  # several are joined by a newline (a question and its answer)
    id_field: str | None = None
    prefix_field: str = "prefix"  # extraction targets: the prompt and the secret it should be continued with
    secret_field: str = "secret"


DATASET_OPTIONS = ("split", "text_field", "id_field", "prefix_field", "secret_field")


def is_hub_dataset(spec: str | Path) -> bool:
    return str(spec).startswith("hf:")


def parse_dataset(spec: str | Path) -> HubDataset:
    from urllib.parse import parse_qsl

    name, _, query = str(spec).partition("?")
    match = HUB_DATASET.match(name)
    if match is None:
        raise LetheError(f"{spec!r} is not a Hugging Face data set name: hf:org/name[:config][@revision], "
                         f"optionally followed by ?split=...&text_field=...&id_field=...")
    try:
        options = dict(parse_qsl(query, strict_parsing=True)) if query else {}
    except ValueError:
        raise LetheError(f"{spec!r}: options after '?' are key=value pairs joined by '&'") from None
    if unknown := sorted(set(options) - set(DATASET_OPTIONS)):
        raise LetheError(f"{spec!r}: unknown option {unknown[0]!r} (known: {', '.join(DATASET_OPTIONS)})")
    fields = tuple(options.get("text_field", "text").split(","))
    return HubDataset(name, match["repo"], match["config"], match["revision"], options.get("split", "train"),
                      fields, options.get("id_field"), options.get("prefix_field", "prefix"),
                      options.get("secret_field", "secret"))


def load_hub_table(source: HubDataset, *, targets: bool = False):
    """One split of a Hub data set through `datasets.load_dataset` and its cache (HF_DATASETS_CACHE), holding its
    text fields (`targets`: its prefix and secret fields) and its id field."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(source.repo, source.config, split=source.split, revision=source.revision)
    except (DatasetNotFoundError, ConnectionError) as exc:
        first = str(exc).strip().splitlines()[0]
        if datasets.config.HF_HUB_OFFLINE:
            raise LetheError(f"data set {source.name!r} is not in the Hugging Face cache and HF_HUB_OFFLINE / "
                             f"HF_DATASETS_OFFLINE is set: load it once with a network ({first})") from None
        raise LetheError(f"data set {source.name!r} cannot be loaded from the Hugging Face Hub ({first})") from None
    except (ValueError, FileNotFoundError) as exc:  # an unknown config or split
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LetheError(f"data set {source.name!r} (split {source.split!r}) cannot be loaded: {first}") from None
    options = {source.prefix_field: "prefix_field", source.secret_field: "secret_field"} if targets else \
        {name: "text_field" for name in source.text_fields}
    missing = [(name, option) for name, option in {**options, source.id_field: "id_field"}.items()
               if name and name not in table.column_names]
    if missing:
        name, option = missing[0]
        raise LetheError(f"data set {source.name!r} has no column {name!r} (columns: "
                         f"{', '.join(table.column_names)}); choose one with ?{option}=")
    return table


def _cached_commit(table) -> tuple[Path | None, str | None]:
    """(the cached file a split was read from, the commit its cache directory is named by)."""
    cache = Path(table.cache_files[0]["filename"]) if table.cache_files else None
    commit = cache.parent.name if cache is not None and re.fullmatch(r"[0-9a-f]{40}", cache.parent.name) else None
    return cache, commit


def _record_split(spec: str | Path, source: HubDataset, commit: str | None) -> None:
    _record(str(spec), {"repo": source.repo, "config": source.config, "split": source.split,
                        "revision": source.revision or "main", "commit": commit})


def read_hub_targets(spec: str | Path) -> tuple[list[dict], Path | None]:
    """(extraction target records {id, prefix, secret, kind}, the cached file) of one split of a Hub data set, its
    prompt and secret in the columns `prefix_field` and `secret_field` name."""
    source = parse_dataset(spec)
    table = load_hub_table(source, targets=True)
    cache, commit = _cached_commit(table)
    prefix = f"{source.repo}{':' + source.config if source.config else ''}/{source.split}"
    records = [{"id": str(row[source.id_field]) if source.id_field else f"{prefix}/{index}",
                "prefix": row[source.prefix_field], "secret": row[source.secret_field], "kind": row.get("kind")}
               for index, row in enumerate(table)]
    _record_split(spec, source, commit)
    return records, cache


def read_hub_documents(spec: str | Path, domain: str = ""):
    """(documents, the cached file they came from) of one split of a Hub data set; the commit it resolved to is
    recorded in env.json (its cache directory is named by it)."""
    from lethe.data.documents import Document

    source = parse_dataset(spec)
    table = load_hub_table(source)
    cache, commit = _cached_commit(table)
    prefix = f"{source.repo}{':' + source.config if source.config else ''}/{source.split}"
    licence = table.info.license or ""
    documents = []
    for index, record in enumerate(table):
        parts = [record[name] for name in source.text_fields]
        if not all(isinstance(part, str) for part in parts):
            fields = ", ".join(source.text_fields)
            raise LetheError(f"data set {source.name!r} record {index + 1}: {fields} is not text")
        text = "\n".join(parts)
        if text.strip():
            doc_id = str(record[source.id_field]) if source.id_field else f"{prefix}/{index}"
            documents.append(Document(id=doc_id, text=text, domain=domain, source=f"hf:{prefix}", licence=licence))
    if not documents:
        raise LetheError(f"data set {source.name!r} (split {source.split!r}) holds no non-empty documents")
    if len({doc.id for doc in documents}) < len(documents):
        raise LetheError(f"data set {source.name!r}: ids in {source.id_field!r} repeat")
    _record_split(spec, source, commit)
    return documents, cache
