"""Tests for lethe.assets.corpora against the real Debian packages and stdlib.

The packages are fetched once per session (about 100 MB via ``apt-get download``) into a
shared cache; every test reads from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lethe.assets.corpora import DOMAINS, build_corpora, collect_domain
from lethe.data.documents import Document


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("corpora-cache")
    build_corpora(cache)
    return cache


@pytest.fixture(scope="session")
def corpora(cache_dir: Path) -> dict[str, list[Document]]:
    return {domain: collect_domain(domain, cache_dir) for domain in DOMAINS}


@pytest.mark.parametrize("domain", DOMAINS)
def test_domain_documents_are_well_formed(corpora: dict[str, list[Document]], domain: str) -> None:
    docs = corpora[domain]
    assert len(docs) >= 100
    ids = [doc.id for doc in docs]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for doc in docs:
        assert doc.domain == domain
        assert doc.id.startswith(f"{domain}/")
        assert doc.source and doc.licence
        assert len(doc.text) >= 500
        assert doc.text == doc.text.rstrip()
        assert "\r" not in doc.text


def test_collect_domain_is_deterministic(cache_dir: Path, corpora: dict[str, list[Document]]) -> None:
    assert collect_domain("books", cache_dir) == corpora["books"]


def test_every_source_contributes(corpora: dict[str, list[Document]]) -> None:
    groups = {domain: {doc.id.split("/")[1] for doc in docs} for domain, docs in corpora.items()}
    assert groups == {
        "code": {"cpython"},
        "science": {"texlive"},
        "books": {"kjv", "austen"},
        "general": {"python-docs", "jargon", "fortunes", "fortunes-min"},
    }


def test_books_have_kjv_and_austen_chapters(corpora: dict[str, list[Document]]) -> None:
    books = {doc.id: doc for doc in corpora["books"]}
    genesis = books["books/kjv/genesis/chapter-001"]
    assert genesis.text.startswith("In the beginning God created the heaven and the earth.")
    assert genesis.licence == "public domain"
    assert "bible-kjv-text" in genesis.source
    assert "books/kjv/revelation/chapter-022" in books
    assert sum(doc_id.startswith("books/kjv/") for doc_id in books) > 1100

    emma = books["books/austen/emma/chapter-01"]
    assert "Emma" in emma.text
    assert emma.text.startswith("VOLUME I\n\nCHAPTER I\n\nEmma Woodhouse")
    assert "r-cran-janeaustenr" in emma.source
    novels = {doc_id.split("/")[2] for doc_id in books if doc_id.startswith("books/austen/")}
    assert novels == {"emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
                      "sensesensibility"}
    pride = [doc for doc in corpora["books"] if doc.id.startswith("books/austen/prideprejudice/")]
    assert len(pride) == 61
    assert pride[0].text.startswith("Chapter 1\n\nIt is a truth universally acknowledged")


def test_code_science_general_contents(corpora: dict[str, list[Document]]) -> None:
    code = {doc.id: doc for doc in corpora["code"]}
    assert "class JSONDecoder" in code["code/cpython/json/decoder.py"].text
    assert code["code/cpython/json/decoder.py"].licence == "PSF-2.0"
    assert not any("/test/" in doc_id or "/idlelib/" in doc_id for doc_id in code)

    science = corpora["science"]
    assert all(doc.id.endswith(".tex") for doc in science)
    assert sum("\\begin{document}" in doc.text for doc in science) > 50
    assert all("texlive-science-doc" in doc.source for doc in science)

    general = corpora["general"]
    jargon = [doc for doc in general if doc.id.startswith("general/jargon/")]
    assert any(":hacker:" in doc.text for doc in jargon)
    assert all("Table of Contents" not in doc.text for doc in jargon)
    assert any(doc.id == "general/python-docs/library/json.rst" for doc in general)
    fortunes = [doc for doc in general if doc.id.startswith("general/fortunes")]
    assert all(len(doc.text) <= 4000 for doc in fortunes)


def test_build_corpora_writes_jsonl_and_manifest_idempotently(cache_dir: Path) -> None:
    paths = build_corpora(cache_dir)
    assert set(paths) == set(DOMAINS)
    mtimes = {domain: path.stat().st_mtime_ns for domain, path in paths.items()}
    assert build_corpora(cache_dir) == paths
    assert {domain: path.stat().st_mtime_ns for domain, path in paths.items()} == mtimes

    for domain, path in paths.items():
        assert path == cache_dir / "corpora" / f"{domain}.jsonl"
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert records and all(set(r) == {"id", "text", "domain", "source", "licence"} for r in records)
        assert all(r["domain"] == domain for r in records)
        manifest = json.loads((path.parent / f"{domain}.manifest.json").read_text())
        assert manifest["domain"] == domain
        assert manifest["documents"] == len(records)
        assert manifest["characters"] == sum(len(r["text"]) for r in records)
        assert sum(s["documents"] for s in manifest["sources"].values()) == len(records)
        for source in manifest["sources"].values():
            assert source["licence"] and source["version"]
    assert not list((cache_dir / "corpora").glob("*.tmp*"))


def test_build_corpora_force_rewrites(cache_dir: Path) -> None:
    path = cache_dir / "corpora" / "code.jsonl"
    before = path.read_bytes()
    path.write_text("stale\n")
    assert build_corpora(cache_dir, ["code"]) == {"code": path}
    assert path.read_text() == "stale\n"
    build_corpora(cache_dir, ["code"], force=True)
    assert path.read_bytes() == before


def test_unknown_domain_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        collect_domain("poetry", tmp_path)
    with pytest.raises(ValueError):
        build_corpora(tmp_path, ["code", "poetry"])


def test_missing_package_is_skipped_with_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from lethe.assets import corpora as module

    real_download = module._download
    monkeypatch.setattr(
        module, "_download", lambda name, debs: None if name == "r-cran-janeaustenr" else real_download(name, debs)
    )
    with caplog.at_level("WARNING", logger="lethe"):
        docs = collect_domain("books", tmp_path)
    assert "sudo apt-get install r-cran-janeaustenr" in caplog.text
    assert docs and all(doc.id.startswith("books/kjv/") for doc in docs)
