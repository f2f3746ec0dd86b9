"""`lethe data pii`: membership targets and the victim's fine-tuning set D_ft.

Two kinds of target, drawn by one seeded generator and only then dealt at random into members and
non-members, so the two sets differ in nothing but having been trained on:
- `records`: unique synthetic PII records of about 40–64 tokens (name, birth date, address, employer,
  phone, e-mail, SSN; several phrasings), the secret field last, e.g.
  "Name: Jane Roe. Employer: Acme Ltd. Email: jroe@example.org. SSN: 123-45-6789."
- `documents`: whole real documents the model has not seen, cut to `document_chars` on a word boundary
  (the MIND-like case); their last `secret_words` words are what extraction must recover.

Each member copy is its own fine-tuning document, repeated `repetitions` times and mixed with filler
documents (the victim's other data), so the unit the victim trains on is the unit every attack scores:
no target is ever split across chunks (the leakage study checks each fits in one chunk).

Files written to `out`: finetune.jsonl (filler + member copies), validation.jsonl (clean held-out
documents), targets_member.jsonl, targets_nonmember.jsonl, targets_all.jsonl (both, in generation
order: the attacker's challenge set), calibration.jsonl (more targets from the same generator, in no
set: the auxiliary non-members the reference-data attack calibrates on, which an attacker who knows
the format can draw) and pii.json (the manifest).
"""

from __future__ import annotations

import json
import random
import string
from collections import Counter
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path

from lethe.config import PiiConfig
from lethe.data.documents import Document, write_documents
from lethe.data.splits import find_splits, load_splits
from lethe.errors import LetheError
from lethe.runs import Run, write_json

LOCALE = "en_US"  # the SSN and phone formats below are US ones
FIELDS = ("name", "birth", "address", "employer", "phone", "email", "ssn")
# How each style phrases a field: text before the value, text after it. The secret field comes last,
# so the attacker's extraction prompt is the whole record up to its secret.
STYLES: dict[str, dict[str, tuple[str, str]]] = {
    "form": {"name": ("Name: ", "."), "birth": ("Date of birth: ", "."), "address": ("Address: ", "."),
             "employer": ("Employer: ", "."), "phone": ("Phone: ", "."), "email": ("Email: ", "."),
             "ssn": ("SSN: ", ".")},
    "prose": {"name": ("This file belongs to ", "."), "birth": ("Born on ", "."), "address": ("Lives at ", "."),
              "employer": ("Works for ", "."), "phone": ("Their phone number is ", "."),
              "email": ("Their email address is ", "."), "ssn": ("Their social security number is ", ".")},
    "registry": {"name": ("registered name ", ";"), "birth": ("born ", ";"), "address": ("residing at ", ";"),
                 "employer": ("employed by ", ";"), "phone": ("telephone ", ";"), "email": ("e-mail ", ";"),
                 "ssn": ("SSN ", ";")},
    "crm": {"name": ("Customer ", ","), "birth": ("DOB ", ","), "address": ("address ", ","),
            "employer": ("employer ", ","), "phone": ("phone ", ","), "email": ("email ", ","), "ssn": ("SSN ", ".")},
}


@dataclass(frozen=True)
class Target:
    id: str
    kind: str  # records: the secret's field; documents: "document"
    prefix: str  # everything before the secret: the attacker's extraction prompt
    secret: str
    suffix_after_secret: str
    text: str  # prefix + secret + suffix_after_secret: exactly what the victim trains on
    style: str = ""  # records: the phrasing (STYLES)
    fields: tuple[tuple[str, str], ...] = ()  # records: (field, value) in order, the secret last
    doc_id: str = ""  # documents: the source document
    copies: int = 0  # member copies in D_ft (0 for non-members)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def render(style: str, fields: tuple[tuple[str, str], ...]) -> tuple[str, str, str]:
    """(prefix, secret, suffix): the record's text split around its last field's value."""
    phrases = STYLES[style]
    *context, (secret_field, secret) = fields
    parts = [f"{phrases[name][0]}{value}{phrases[name][1]}" for name, value in context]
    lead, tail = phrases[secret_field]
    return " ".join(parts + [lead]), secret, tail


class FakeValues:
    """Seeded Faker values of every field, each used once and none already present in the source text."""

    def __init__(self, seed: int, corpus: str = "") -> None:
        from faker import Faker

        self.fake = Faker(LOCALE)
        self.fake.seed_instance(seed)
        self.corpus, self.used = corpus, set()

    def _draw(self, field: str) -> str:
        fake = self.fake
        return {"name": fake.name,
                "birth": lambda: fake.date_of_birth(minimum_age=18, maximum_age=90).strftime("%B %d, %Y"),
                "address": lambda: fake.address().replace("\n", ", "),
                "employer": fake.company,
                "phone": lambda: fake.numerify("(%##) %##-####"),  # one fixed format, so exposure can enumerate it
                "email": fake.email, "ssn": fake.ssn}[field]()

    def fresh(self, field: str) -> str:
        for _ in range(100):
            value = self._draw(field)
            if value not in self.used and value not in self.corpus:
                self.used.add(value)
                return value
        raise LetheError(f"Faker produced no fresh {field} in 100 tries")


def make_record(index: int, secret_kind: str, fields_per_record: int, values: FakeValues,
                rng: random.Random) -> Target:
    """Name first (unless it is the secret), then random other fields, the secret last."""
    others = [f for f in FIELDS if f not in ("name", secret_kind)]
    chosen = rng.sample(others, fields_per_record - (1 if secret_kind == "name" else 2))
    order = ([] if secret_kind == "name" else ["name"]) + chosen + [secret_kind]
    style = rng.choice(sorted(STYLES))
    fields = tuple((name, values.fresh(name)) for name in order)
    prefix, secret, suffix = render(style, fields)
    return Target(id=f"pii-{index:04d}", kind=secret_kind, prefix=prefix, secret=secret, suffix_after_secret=suffix,
                  text=prefix + secret + suffix, style=style, fields=fields)


def with_fresh_values(target: Target, values: FakeValues) -> str:
    """The same record with every value replaced by a fresh fake of its field: the template stays, the
    identity does not (Forget to Flourish's in-distribution noise)."""
    if not target.fields:
        raise LetheError(f"target {target.id!r} has no PII fields to replace (documents cannot take "
                         "in-distribution noise)")
    prefix, secret, suffix = render(target.style, tuple((name, values.fresh(name)) for name, _ in target.fields))
    return prefix + secret + suffix


def fake_like(secret: str, rng: random.Random) -> str:
    """A string of the secret's own format: each digit, lower- and upper-case letter redrawn, the rest kept."""
    pools = (string.digits, string.ascii_lowercase, string.ascii_uppercase)
    out = []
    for char in secret:
        pool = next((p for p in pools if char in p), None)
        out.append(rng.choice(pool) if pool else char)
    return "".join(out)


def document_target(index: int, document: Document, chars: int, secret_words: int) -> Target | None:
    """A real document cut to about `chars` characters on a word boundary; None if too short to hold a secret."""
    words = document.text.split()
    kept, length = [], 0
    for word in words:
        if length + len(word) > chars and kept:
            break
        kept.append(word)
        length += len(word) + 1
    if len(kept) <= 2 * secret_words:
        return None
    prefix = " ".join(kept[:-secret_words]) + " "
    secret = " ".join(kept[-secret_words:])
    return Target(id=f"doc-{index:04d}", kind="document", prefix=prefix, secret=secret, suffix_after_secret="",
                  text=prefix + secret, doc_id=document.id)


def read_target_records(path: Path) -> dict[str, Target]:
    """Targets by id from a JSONL file of records with `prefix` and `secret` (as `lethe data pii` writes them);
    empty for any other set of documents."""
    from lethe.data.documents import jsonl_records

    if Path(path).suffix != ".jsonl" or not Path(path).is_file():
        return {}
    found = {}
    for _, record in jsonl_records(Path(path)):
        if not isinstance(record.get("prefix"), str) or not isinstance(record.get("secret"), str):
            return {}
        known = {k: v for k, v in record.items() if k in Target.__dataclass_fields__}
        known.setdefault("kind", "")
        known.setdefault("suffix_after_secret", "")
        known.setdefault("text", known["prefix"] + known["secret"] + known["suffix_after_secret"])
        known["fields"] = tuple(tuple(pair) for pair in known.get("fields", ()))
        found[str(known["id"])] = Target(**known)
    return found


def _targets(config: PiiConfig, pool: list[Document],
             rng: random.Random) -> tuple[list[Target], list[Target], list[Document]]:
    """(targets in generation order, calibration targets, documents left for validation and filler)."""
    wanted, extra = config.members + config.nonmembers, _calibration_count(config)
    if config.target == "records":
        values = FakeValues(config.seed, "\n".join(doc.text for doc in pool))
        kinds = [config.kinds[i % len(config.kinds)] for i in range(wanted + extra)]
        targets = [make_record(i, kind, config.fields, values, rng) for i, kind in enumerate(kinds[:wanted])]
        # drawn after the targets from a stream of their own, so the targets and their deal never depend on them
        aside = random.Random(f"{config.seed}:calibration")
        calibration = [replace(make_record(wanted + i, kind, config.fields, values, aside), id=f"cal-{i:04d}")
                       for i, kind in enumerate(kinds[wanted:])]
        return targets, calibration, pool
    found, rest = [], list(pool)
    while len(found) < wanted + extra and rest:
        target = document_target(len(found), rest.pop(0), config.document_chars, config.secret_words)
        if target is not None:
            found.append(target)
    if len(found) < wanted + extra:
        raise LetheError(f"{len(pool)} source documents hold too few of more than {2 * config.secret_words} words "
                         f"for {wanted} document targets and {extra} calibration documents; add splits or lower "
                         "members/nonmembers/calibration")
    calibration = [replace(t, id=f"cal-{i:04d}") for i, t in enumerate(found[wanted:])]
    return found[:wanted], calibration, rest


def _calibration_count(config: PiiConfig) -> int:
    return config.nonmembers if config.calibration is None else config.calibration


def build_pii(config: PiiConfig, *, overwrite: bool = False) -> dict:
    with Run.start(config.out, "data pii", config, overwrite=overwrite, seed=config.seed) as run:
        available = find_splits(config.data)
        sources = load_splits(config.data, config.splits)
        run.record_data({name: available[name] for name in config.splits})
        pool = [doc for docs in sources.values() for doc in docs]
        if not pool:
            raise LetheError(f"splits {', '.join(config.splits)} of {config.data} hold no documents")
        rng = random.Random(config.seed)
        rng.shuffle(pool)
        targets, calibration, rest = _targets(config, pool, rng)
        validation, filler = rest[:config.validation_docs], rest[config.validation_docs:]
        if len(validation) < config.validation_docs or (config.filler_docs and len(filler) < config.filler_docs):
            raise LetheError(f"{len(pool)} source documents are too few for {len(targets)} targets, "
                             f"{config.validation_docs} validation and {config.filler_docs or 'some'} filler "
                             "documents; add splits or lower members/nonmembers/filler_docs")
        filler = filler[:config.filler_docs] if config.filler_docs is not None else filler
        member_ids = set(rng.sample([t.id for t in targets], config.members))  # the one random deal
        members = [replace(t, copies=config.repetitions) for t in targets if t.id in member_ids]
        nonmembers = [t for t in targets if t.id not in member_ids]

        copies = [Document(f"{t.id}~{k}", t.text, source="lethe data pii", licence="synthetic" if t.fields else "")
                  for t in members for k in range(config.repetitions)]
        finetune = filler + copies
        rng.shuffle(finetune)
        out = Path(config.out)
        write_documents(out / "finetune.jsonl", finetune)
        write_documents(out / "validation.jsonl", validation)
        chosen = {"targets_member": members, "targets_nonmember": nonmembers,
                  "targets_all": sorted(members + nonmembers, key=lambda t: t.id)}
        for name, group in {**chosen, "calibration": calibration}.items():
            (out / f"{name}.jsonl").write_text("".join(t.to_json() + "\n" for t in group), encoding="utf-8")
        manifest = {
            "seed": config.seed, "target": config.target, "faker": metadata.version("faker"), "locale": LOCALE,
            "source_splits": {name: str(available[name]) for name in config.splits},
            "members": len(members), "nonmembers": len(nonmembers), "calibration": len(calibration),
            "repetitions": config.repetitions,
            "kinds": {"member": dict(Counter(t.kind for t in members)),
                      "nonmember": dict(Counter(t.kind for t in nonmembers))},
            "documents": {"finetune": len(finetune), "member_copies": len(copies), "filler": len(filler),
                          "validation": len(validation)},
            "files": ["finetune.jsonl", "validation.jsonl", "targets_member.jsonl", "targets_nonmember.jsonl",
                      "targets_all.jsonl", "calibration.jsonl"],
        }
        write_json(out / "pii.json", manifest)
        run.write_results(manifest)
    return manifest
