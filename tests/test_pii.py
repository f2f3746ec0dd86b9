"""`lethe data pii`: targets from one generator, each member copy its own fine-tuning document."""

import json
import random
from collections import Counter

import pytest

from lethe.cli import main
from lethe.config import ChunkConfig, PiiConfig
from lethe.data.chunking import chunk_documents
from lethe.data.documents import read_documents
from lethe.data.pii import FakeValues, build_pii, fake_like, read_target_records, with_fresh_values

FILES = ("finetune.jsonl", "validation.jsonl", "targets_member.jsonl", "targets_nonmember.jsonl",
         "targets_all.jsonl", "calibration.jsonl", "pii.json")


def small(data_dir, out, **overrides) -> PiiConfig:
    settings = {"members": 8, "nonmembers": 8, "repetitions": 3, "validation_docs": 2, "filler_docs": 6}
    return PiiConfig(data=data_dir, out=out, **(settings | overrides))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def pii_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pii") / "set"
    build_pii(small(data_dir, out))
    return out


def test_the_same_seed_gives_identical_files_and_another_seed_other_records(pii_dir, data_dir, tmp_path):
    build_pii(small(data_dir, tmp_path / "again"))
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (pii_dir / name).read_bytes(), name
    build_pii(small(data_dir, tmp_path / "other", seed=1))
    secrets = {r["secret"] for r in read_jsonl(pii_dir / "targets_all.jsonl")}
    assert secrets.isdisjoint(r["secret"] for r in read_jsonl(tmp_path / "other" / "targets_all.jsonl"))


def test_each_member_copy_is_its_own_document_and_nonmembers_appear_nowhere(pii_dir):
    finetune = read_jsonl(pii_dir / "finetune.jsonl")
    validation = read_jsonl(pii_dir / "validation.jsonl")
    members = read_jsonl(pii_dir / "targets_member.jsonl")
    nonmembers = read_jsonl(pii_dir / "targets_nonmember.jsonl")
    assert len(members) == len(nonmembers) == 8
    texts = Counter(doc["text"] for doc in finetune)
    for record in members:
        assert texts[record["text"]] == 3 and record["copies"] == 3, record["id"]
        assert sum(doc["text"].count(record["secret"]) for doc in finetune) == 3  # nowhere but in its copies
    for record in nonmembers + members:
        assert not any(record["secret"] in doc["text"] for doc in validation), record["id"]
    for record in nonmembers:
        assert record["copies"] == 0 and not any(record["secret"] in doc["text"] for doc in finetune)
    assert len(finetune) == 8 * 3 + 6  # member copies + filler
    for record in members + nonmembers:
        assert record["prefix"] + record["secret"] + record["suffix_after_secret"] == record["text"]
        fields = dict(record["fields"])
        assert list(fields)[-1] == record["kind"] and fields[record["kind"]] == record["secret"]
        assert all(value in record["text"] for value in fields.values()) and len(fields) == 5
    assert {r["id"] for r in read_jsonl(pii_dir / "targets_all.jsonl")} == {r["id"] for r in members + nonmembers}
    calibration = read_jsonl(pii_dir / "calibration.jsonl")  # the same generator, in no set, nowhere in D_ft
    assert len(calibration) == 8 and {r["kind"] for r in calibration} <= {"name", "email", "phone", "address", "ssn"}
    assert not {r["secret"] for r in calibration} & {r["secret"] for r in members + nonmembers}
    assert not any(r["secret"] in doc["text"] for r in calibration for doc in finetune + validation)
    manifest = json.loads((pii_dir / "pii.json").read_text())
    assert manifest["documents"] == {"finetune": 30, "member_copies": 24, "filler": 6, "validation": 2}


def test_no_record_straddles_a_training_chunk(pii_dir, micro_model):
    """The unit the victim trains on is the unit every attack scores."""
    _, tokenizer = micro_model
    chunk = ChunkConfig(length=128)
    chunks = chunk_documents(read_documents(pii_dir / "finetune.jsonl"), tokenizer, chunk, 256)
    trained = Counter(c.input_ids for c in chunks)
    for record in read_jsonl(pii_dir / "targets_member.jsonl"):
        ids = tuple(tokenizer(record["text"], add_special_tokens=False)["input_ids"])
        assert len(ids) <= chunk.length
        assert trained[ids] == 3, record["id"]  # three whole chunks, each exactly the record
        partial = [c for c in chunks if c.input_ids != ids and record["secret"] in tokenizer.decode(c.input_ids)]
        assert not partial


def test_records_are_about_40_to_64_tokens(pii_dir):
    from lethe.models import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    lengths = [len(tokenizer(r["text"])["input_ids"]) for r in read_jsonl(pii_dir / "targets_all.jsonl")]
    assert 40 <= sum(lengths) / len(lengths) <= 64 and max(lengths) <= 80


def test_document_targets_are_whole_unseen_documents(data_dir, tmp_path):
    build_pii(small(data_dir, tmp_path / "docs", target="documents", members=4, nonmembers=4, document_chars=300,
                    filler_docs=2, calibration=2))
    members = read_jsonl(tmp_path / "docs" / "targets_member.jsonl")
    finetune = read_jsonl(tmp_path / "docs" / "finetune.jsonl")
    for record in members + read_jsonl(tmp_path / "docs" / "targets_nonmember.jsonl"):
        assert record["kind"] == "document" and len(record["secret"].split()) == 8 and len(record["text"]) <= 300
        assert not any(record["text"] in doc["text"] for doc in finetune if doc["id"].split("~")[0] != record["id"])
    assert Counter(doc["text"] for doc in finetune)[members[0]["text"]] == 3


def test_in_distribution_noise_keeps_the_template_and_replaces_every_value(pii_dir):
    records = read_target_records(pii_dir / "targets_all.jsonl")
    values = FakeValues("noise", "\n".join(r.text for r in records.values()))
    for record in records.values():
        noisy = with_fresh_values(record, values)
        assert noisy != record.text
        assert not any(value in noisy for _, value in record.fields)
        template = record.text
        for _, value in record.fields:
            template = template.replace(value, "{}", 1)
        assert noisy.startswith(template.split("{}")[0])  # the same phrasing around new values


def test_a_fake_secret_keeps_the_format():
    rng = random.Random(0)
    for secret in ("123-45-6789", "(555) 010-2222", "jane.roe@example.org", "Jane Roe"):
        fake = fake_like(secret, rng)
        assert fake != secret and len(fake) == len(secret)
        for a, b in zip(secret, fake, strict=True):
            assert a.isdigit() == b.isdigit() and a.islower() == b.islower() and a.isupper() == b.isupper()
            assert a.isalnum() or a == b


def test_cli_writes_a_set_and_refuses_missing_or_empty_data(data_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "pii", "--out", str(out), "--data", str(data_dir), "--seed", "3",
                 "--set", "members=4", "--set", "nonmembers=2", "--set", "kinds=[ssn,email]"]) == 0
    assert "4 member records" in capsys.readouterr().out
    assert {r["kind"] for r in read_jsonl(out / "targets_member.jsonl")} <= {"ssn", "email"}
    assert json.loads((out / "pii.json").read_text())["seed"] == 3
    assert main(["data", "pii", "--out", str(out), "--data", str(data_dir)]) == 2
    assert "already holds" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    for data, message in ((tmp_path / "missing", "does not exist"), (empty, "holds no splits")):
        assert main(["data", "pii", "--out", str(tmp_path / "x"), "--data", str(data), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    (empty / "general").mkdir()
    (empty / "general" / "eval.jsonl").write_text("")
    assert main(["data", "pii", "--out", str(tmp_path / "y"), "--data", str(empty),
                 "--set", "splits=[general/eval]"]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["data", "pii", "--out", str(tmp_path / "z"), "--data", str(data_dir), "--set", "target=documents",
                 "--set", "members=500"]) == 2
    assert "too few" in capsys.readouterr().err


def test_member_and_nonmember_targets_cannot_be_told_apart_without_the_model(data_dir, tmp_path):
    """The generator deals members at random: a text classifier stays inside its permutation null (seeds
    fixed in advance; each lies outside its 95% range by chance 1 time in 20, so one of five may)."""
    from lethe.attacks.blind import blind_baseline

    inside = []
    for seed in range(5):
        out = tmp_path / f"seed{seed}"
        build_pii(small(data_dir, out, members=60, nonmembers=60, seed=seed))
        texts = [[r["text"] for r in read_jsonl(out / f"targets_{role}.jsonl")] for role in ("member", "nonmember")]
        blind = blind_baseline(*texts, permutations=40, seed=seed)
        inside.append(blind["ci95"][0] <= blind["auc"] <= blind["ci95"][1])
    assert sum(inside) >= 4, inside
