import json

import pytest

from lethe.cli import main
from lethe.config import PiiConfig
from lethe.data.pii import build_pii

FILES = ("finetune.jsonl", "validation.jsonl", "targets_member.jsonl", "targets_nonmember.jsonl", "pii.json")


def small(data_dir, out, **overrides) -> PiiConfig:
    settings = {"members": 8, "nonmembers": 8, "repetitions": 3, "prefix_chars": 120, "validation_docs": 2}
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
    secrets = {r["secret"] for r in read_jsonl(pii_dir / "targets_member.jsonl")}
    assert secrets.isdisjoint(r["secret"] for r in read_jsonl(tmp_path / "other" / "targets_member.jsonl"))


def test_members_appear_exactly_repetitions_times_and_nonmembers_never(pii_dir):
    finetune = read_jsonl(pii_dir / "finetune.jsonl")
    validation = read_jsonl(pii_dir / "validation.jsonl")
    members = read_jsonl(pii_dir / "targets_member.jsonl")
    nonmembers = read_jsonl(pii_dir / "targets_nonmember.jsonl")
    assert len(members) == len(nonmembers) == 8
    for record in members:
        counts = {doc["id"]: doc["text"].count(record["text"]) for doc in finetune}
        assert sum(counts.values()) == 3, record["id"]
        assert sorted(doc_id for doc_id, n in counts.items() if n) == record["hosts"]  # once per host document
        assert sum(doc["text"].count(record["secret"]) for doc in finetune) == 3
    for record in nonmembers:
        assert record["hosts"] == []
        assert not any(record["secret"] in doc["text"] for doc in finetune + validation), record["id"]
    for record in members + nonmembers:
        assert record["prefix"] + record["secret"] + record["suffix_after_secret"] == record["text"]
        assert record["prefix"].endswith(" ") and len(record["prefix"]) > 120
        assert not any(record["secret"] in doc["text"] for doc in validation)
    assert {doc["id"] for doc in validation}.isdisjoint(doc["id"] for doc in finetune)
    kinds = {"name", "email", "phone", "address", "ssn"}
    assert {r["kind"] for r in members} == {r["kind"] for r in nonmembers} == kinds
    ssn = next(r["secret"] for r in members if r["kind"] == "ssn")
    assert len(ssn) == 11 and ssn[3] == ssn[6] == "-"
    manifest = json.loads((pii_dir / "pii.json").read_text())
    assert manifest["members"] == 8 and manifest["faker"] and manifest["documents"]["validation"] == 2
    assert all(doc["source"] and doc["licence"] for doc in finetune)


def test_cli_writes_a_set_and_refuses_missing_or_empty_data(data_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "pii", "--out", str(out), "--data", str(data_dir), "--seed", "3",
                 "--set", "members=4", "--set", "nonmembers=2", "--set", "kinds=[ssn,email]"]) == 0
    assert "4 member records" in capsys.readouterr().out
    assert {r["kind"] for r in read_jsonl(out / "targets_member.jsonl")} == {"ssn", "email"}
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
    assert main(["data", "pii", "--out", str(tmp_path / "z"), "--data", str(data_dir),
                 "--set", "members=500", "--set", "repetitions=9"]) == 2
    assert "too few" in capsys.readouterr().err
