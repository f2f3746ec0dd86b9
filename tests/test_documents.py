import json

import pytest

from lethe.data.documents import read_documents
from lethe.errors import LetheError

TEXTS = ["It is a truth universally acknowledged.", "In the beginning was the Word."]


def test_jsonl_text_and_parquet_load_through_one_path(tmp_path):
    import datasets

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    parquet = tmp_path / "docs.parquet"
    datasets.Dataset.from_dict({"id": ["d0", "d1"], "text": TEXTS}).to_parquet(str(parquet))
    txt = tmp_path / "austen.txt"
    txt.write_text(TEXTS[0] + "\n\nSecond paragraph.\n")

    assert [d.text for d in read_documents(jsonl)] == TEXTS
    assert [(d.id, d.text) for d in read_documents(parquet)] == [("d0", TEXTS[0]), ("d1", TEXTS[1])]
    [whole] = read_documents(txt, domain="books")
    assert whole.id == txt.as_posix() and "Second paragraph" in whole.text and whole.domain == "books"


def test_malformed_jsonl_line_is_named(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + '{"text": "broken\n')
    with pytest.raises(LetheError, match=r"line 2 is not valid JSON"):
        read_documents(path)


def test_non_text_field_is_refused(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": 42}) + "\n")
    with pytest.raises(LetheError, match="line 2: field 'text' is int, not text"):
        read_documents(path)


def test_missing_text_field(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"body": "no text key"}) + "\n")
    with pytest.raises(LetheError, match="line 1 has no 'text' field"):
        read_documents(path)


@pytest.mark.parametrize("content", ["", "\n\n", json.dumps({"text": "   "}) + "\n"])
def test_empty_files_are_refused(tmp_path, content):
    path = tmp_path / "docs.jsonl"
    path.write_text(content)
    with pytest.raises(LetheError, match="empty|no (non-empty )?documents"):
        read_documents(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(LetheError, match="does not exist"):
        read_documents(tmp_path / "nope.jsonl")
    odd = tmp_path / "docs.xlsx"
    odd.write_text("x")
    with pytest.raises(LetheError, match="unknown format"):
        read_documents(odd)
