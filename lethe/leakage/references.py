"""Reference victims of the leakage study: what LiRA and RMIA calibrate each record against.

Per seed, the candidate records are the targets (members and non-members) and the calibration
records. Reference victim k fine-tunes the same release with the victim's own recipe on D_ft^k: the
victim's filler plus `repetitions` copies of the candidates its keep row selects, built as `lethe
data pii` builds the victim's D_ft. The keep matrix is balanced (each record in exactly K/2 references,
Carlini et al.'s `uniform(K, N).argsort(0) < K/2`) and shared by every release and mode of the seed,
so each comparison pairs the same references' data.

Layout under the seed's directory:
  references/keep.json                            the records and the (K, N) keep matrix
  references/ref-<k>.jsonl                        D_ft of reference k
  cells/<variant>/<mode>/references/ref-<k>/      its fine-tuning run, with the cell's recipe
  cells/<variant>/<mode>/references/references.json  the manifest `lethe attack mia` reads (reference_victims)
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from lethe.attacks.per_example import balanced_keep
from lethe.attacks.reference_victims import write_manifest
from lethe.data.documents import Document, read_documents, write_documents
from lethe.runs import read_json, write_json

# reference k trains with its own seed (data order, initialisation of adapters), apart from the victim's
SEED_STRIDE = 1_000_003


def reference_seed(seed: int, k: int) -> int:
    return seed + SEED_STRIDE * (k + 1)


def _read_records(path: Path) -> list[dict]:
    from lethe.leakage.study import read_targets_file

    return read_targets_file(path)


def candidate_records(pii_dir: Path) -> list[dict]:
    """Every record a reference may be dealt: the targets, then the calibration records."""
    return _read_records(pii_dir / "targets_all.jsonl") + _read_records(pii_dir / "calibration.jsonl")


def reference_data(root: Path, k: int) -> Path:
    return root / f"ref-{k}.jsonl"


def build_reference_data(pii_dir: Path, root: Path, references: int, seed: int) -> np.ndarray:
    """Deal the candidates into K balanced halves and write each reference's D_ft (read back when present)."""
    records = candidate_records(pii_dir)
    ids = [record["id"] for record in records]
    saved = root / "keep.json"
    if saved.is_file():
        keep = read_json(saved)
        if keep["records"] == ids and len(keep["keep"]) == references and keep["seed"] == seed:
            return np.asarray(keep["keep"], dtype=bool)
    keep = balanced_keep(references, len(records), seed)
    member_ids = {record["id"] for record in _read_records(pii_dir / "targets_member.jsonl")}
    filler = [doc for doc in read_documents(pii_dir / "finetune.jsonl") if doc.id.split("~")[0] not in member_ids]
    repetitions = read_json(pii_dir / "pii.json")["repetitions"]
    for k in range(references):
        copies = [Document(f"{record['id']}~{r}", record["text"], source="lethe data pii",
                           licence="synthetic" if record.get("fields") else "")
                  for record, kept in zip(records, keep[k], strict=True) if kept for r in range(repetitions)]
        documents = filler + copies
        random.Random(f"{seed}:reference-{k}").shuffle(documents)
        write_documents(reference_data(root, k), documents)
    write_json(saved, {"seed": seed, "records": ids, "keep": keep.tolist()})  # last: it marks the data complete
    return keep


def write_reference_manifest(root: Path, directory: Path, references: int) -> Path:
    """references.json for one release and mode: the models, in keep order, and the keep matrix."""
    keep = read_json(root / "keep.json")
    path = directory / "references.json"
    write_manifest(path, [f"ref-{k}/model" for k in range(references)], keep["records"],
                   np.asarray(keep["keep"], dtype=bool))
    return path
