import json

import pytest

from lethe.config import DataBuildConfig
from lethe.data.build import build_data
from lethe.data.splits import (
    _shingles,
    assign_splits,
    find_splits,
    given_splits,
    load_corpora,
    load_splits,
)
from lethe.errors import LetheError

SIZES = {"forget": 5, "retain": 10, "approximate": 5, "general_retain": 10, "general_eval": 5}


def _splits(corpus_files, **overrides):
    config = DataBuildConfig(sizes=SIZES, **overrides)
    return assign_splits(load_corpora(config, corpus_files), config)


def test_every_domain_gets_disjoint_splits_of_real_text(corpus_files):
    splits, _ = _splits(corpus_files)
    domains, parts = ("code", "science", "books"), ("forget", "retain", "approximate")
    assert set(splits) == {f"{d}/{s}" for d in domains for s in parts} | {"general/retain", "general/eval"}
    ids = [doc.id for docs in splits.values() for doc in docs]
    assert len(ids) == len(set(ids)), "a document landed in two splits"
    assert all(len(splits[f"{d}/forget"]) == 5 and len(splits[f"{d}/retain"]) == 10 for d in ("code", "books"))
    assert all(doc.licence and doc.source for docs in splits.values() for doc in docs)


def test_splits_are_deterministic_by_seed(corpus_files):
    first, _ = _splits(corpus_files, seed=3)
    again, _ = _splits(corpus_files, seed=3)
    other, _ = _splits(corpus_files, seed=4)
    ids = lambda splits: {name: [d.id for d in docs] for name, docs in splits.items()}  # noqa: E731
    assert ids(first) == ids(again)
    assert ids(first) != ids(other)


def test_non_members_share_few_ngrams_with_members(corpus_files):
    splits, _ = _splits(corpus_files)
    member_grams = set().union(*(_shingles(d.text, 8) for name, docs in splits.items() if "approximate" not in name
                                 and "eval" not in name for d in docs))
    for name in ("code/approximate", "books/approximate", "science/approximate", "general/eval"):
        for doc in splits[name]:
            grams = _shingles(doc.text, 8)
            assert len(grams & member_grams) < 0.3 * len(grams), f"{doc.id} overlaps the members"


def test_near_duplicates_never_straddle_splits(tmp_path):
    base = [f"Document {i}: " + " ".join(f"word{i}_{j}" for j in range(60)) for i in range(30)]
    copies = [text.replace(f"word{i}_30 ", "changed ") for i, text in enumerate(base[:10])]  # one word changed
    path = tmp_path / "code.jsonl"
    path.write_text("".join(json.dumps({"id": f"doc{i}", "text": t}) + "\n" for i, t in enumerate(base + copies)))
    config = DataBuildConfig(domains=["code"], general=False, sources={"code": [path]},
                             sizes={"forget": 10, "retain": 10, "approximate": 10})
    splits, dedup = assign_splits(load_corpora(config, {}), config)
    kept = {doc.id for docs in splits.values() for doc in docs}
    assert len(kept) == 30 and dedup.dropped_near > 0
    for i in range(10):
        assert not {f"doc{i}", f"doc{30 + i}"} <= kept, f"doc{i} and its near copy were both kept"


def test_build_data_writes_splits_and_a_size_table(data_dir):
    results = json.loads((data_dir / "results.json").read_text())
    assert results["splits"]["code/forget"]["documents"] == 6
    assert all(row["tokens"] > 0 for row in results["splits"].values())
    assert set(find_splits(data_dir)) == set(results["splits"])
    assert (data_dir / "data_hashes.json").is_file() and (data_dir / "config.yaml").is_file()
    assert len(load_splits(data_dir, ["books/forget"])["books/forget"]) == 6


def test_build_refuses_to_replace_existing_splits(data_dir):
    before = (data_dir / "code" / "forget.jsonl").read_text()
    with pytest.raises(LetheError, match="already holds"):
        build_data(DataBuildConfig(out=data_dir, sizes=SIZES))
    assert (data_dir / "code" / "forget.jsonl").read_text() == before


def test_too_few_documents_is_a_clear_error(tmp_path):
    path = tmp_path / "tiny.jsonl"
    path.write_text(json.dumps({"text": "only one document here " * 20}) + "\n")
    config = DataBuildConfig(domains=["code"], general=False, sources={"code": [path]})
    with pytest.raises(LetheError, match="no documents left for its approximate split"):
        assign_splits(load_corpora(config, {}), config)


def test_unknown_split_is_named(data_dir):
    with pytest.raises(LetheError, match="no split 'code/holdout'"):
        load_splits(data_dir, ["code/holdout"])


def test_unseen_documents_fill_the_approximate_split(corpus_files):
    from pathlib import Path

    import lethe

    package = Path(lethe.__file__).parent
    config = DataBuildConfig(domains=["code"], general=False, sizes={"forget": 4, "retain": 4, "approximate": 3},
                             approximate_sources={"code": [str(package / "data" / "*.py")]})
    splits, _ = assign_splits(load_corpora(config, corpus_files), config, given_splits(config))
    assert {doc.id for doc in splits["code/approximate"]} <= {p.as_posix() for p in (package / "data").glob("*.py")}
    assert all(doc.id.startswith("code/cpython/") for doc in splits["code/forget"] + splits["code/retain"])
    with pytest.raises(LetheError, match="no file matches"):
        load_corpora(DataBuildConfig(domains=["code"], general=False, sources={"code": ["/nowhere/*.jsonl"]}), {})
