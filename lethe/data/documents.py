"""Reading documents from JSONL, text or parquet files, with errors that say what is wrong where."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from lethe.errors import LetheError
from lethe.hub import is_hub_dataset, read_hub_documents

log = logging.getLogger("lethe")

FORMATS = {".jsonl": "json", ".json": "json", ".txt": "text", ".text": "text", ".md": "text", ".rst": "text",
           ".py": "text", ".tex": "text", ".parquet": "parquet"}


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    domain: str = ""
    source: str = ""
    licence: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def check_disjoint(first: list[Document], second: list[Document], names: tuple[str, str], why: str) -> None:
    """Refuse two sets that share a text (whitespace-normalised), naming the shared documents."""
    fingerprint = lambda doc: hashlib.sha256(" ".join(doc.text.split()).encode("utf-8")).hexdigest()  # noqa: E731
    seen = {fingerprint(doc): doc.id for doc in first}
    shared = [(seen[key], doc.id) for doc in second if (key := fingerprint(doc)) in seen]
    if shared:
        named = ", ".join(f"{a} = {b}" for a, b in shared[:3])
        raise LetheError(f"the {names[0]} and {names[1]} sets overlap in {len(shared)} documents ({named}); {why}")


def jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line; the first malformed line ends in a LetheError naming it."""
    with path.open(encoding="utf-8", errors="strict") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LetheError(f"{path} line {number} is not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise LetheError(f"{path} line {number} is not a JSON object")
            yield number, record


def _check_jsonl(path: Path) -> None:
    """Find the first malformed line ourselves: the `datasets` parser cannot name it."""
    records = 0
    for number, record in jsonl_records(path):
        if "text" not in record:
            raise LetheError(f"{path} line {number} has no 'text' field")
        if not isinstance(record["text"], str):
            kind = type(record["text"]).__name__
            raise LetheError(f"{path} line {number}: field 'text' is {kind}, not text")
        records += 1
    if not records:
        raise LetheError(f"data file {path} holds no documents")


def read_documents(path: Path, domain: str = "") -> list[Document]:
    """Load one file through `datasets`; a text file is one document, other formats one per record; an
    `hf:org/name[:config][@revision]` name, one split of a Hugging Face data set."""
    if is_hub_dataset(path):
        return read_hub_documents(path, domain)[0]
    path = Path(path)
    if not path.is_file():
        raise LetheError(f"data file {path} does not exist")
    if path.stat().st_size == 0:
        raise LetheError(f"data file {path} is empty")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise LetheError(f"data file {path} has an unknown format (use {', '.join(sorted(FORMATS))})")
    try:
        if fmt == "json":
            _check_jsonl(path)
    except UnicodeDecodeError:
        raise LetheError(f"data file {path} is not UTF-8 text") from None

    import datasets

    datasets.disable_progress_bars()
    options = {"sample_by": "document"} if fmt == "text" else {}
    try:
        table = datasets.load_dataset(fmt, data_files=str(path), split="train", **options)
    except Exception as exc:  # datasets raises many types; all mean "could not read this file"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LetheError(f"could not read {path}: {first}") from None
    if "text" not in table.column_names:
        raise LetheError(f"{path} has no 'text' column (columns: {', '.join(table.column_names)})")
    documents = []
    for index, record in enumerate(table):
        text = record["text"]
        if not isinstance(text, str):
            raise LetheError(f"{path} record {index + 1}: field 'text' is {type(text).__name__}, not text")
        if not text.strip():
            continue
        doc_id = str(record.get("id") or (path.as_posix() if fmt == "text" else f"{path.stem}/{index}"))
        documents.append(Document(
            id=doc_id, text=text, domain=str(record.get("domain") or domain),
            source=str(record.get("source") or path), licence=str(record.get("licence") or record.get("license") or ""),
        ))
    if not documents:
        raise LetheError(f"data file {path} holds no non-empty documents")
    duplicates = len(documents) - len({doc.id for doc in documents})
    if duplicates:
        raise LetheError(f"{path} has {duplicates} repeated document ids")
    return documents


def write_documents(path: Path, documents: list[Document]) -> None:
    from lethe.run_paths import confined

    path = confined(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(doc.to_json() + "\n" for doc in documents), encoding="utf-8")
    tmp.replace(path)
