import copy
import json
import math
import random

import pytest
import torch

from lethe.attacks.extraction import (
    candidates,
    continuation_logliks,
    digit_format,
    extract,
    generate_batched,
    read_targets,
    strategy_kwargs,
)
from lethe.cli import main
from lethe.config import ChunkConfig, DecodingConfig, ExposureConfig, ExtractConfig, PiiConfig, TrainConfig
from lethe.data.chunking import chunk_documents
from lethe.data.documents import Document
from lethe.data.pii import build_pii
from lethe.engine import Trainer, objectives
from lethe.errors import LetheError
from lethe.models import save_model

MEMBERS = 6


@pytest.fixture(scope="module")
def pii_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pii") / "set"
    build_pii(PiiConfig(data=data_dir, out=out, members=MEMBERS, nonmembers=MEMBERS, kinds=["ssn", "phone", "email"],
                        repetitions=2, validation_docs=2, filler_docs=2))
    return out


def records(pii_dir, role):
    return [json.loads(line) for line in (pii_dir / f"targets_{role}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def memorised(micro_model, pii_dir, tmp_path_factory):
    """The micro model fine-tuned until it has memorised the member records."""
    model, tokenizer = micro_model
    documents = [Document(r["id"], r["text"]) for r in records(pii_dir, "member")]
    chunks = chunk_documents(documents, tokenizer, ChunkConfig(length=128), context=256)
    config = TrainConfig(lr=1e-2, epochs=60, batch_size=len(chunks), warmup_ratio=0, scheduler="constant")
    trainer = Trainer(copy.deepcopy(model).train(), objectives.get("lm")(), {"train": chunks}, config,
                      pad_id=tokenizer.pad_token_id, desc="memorising")
    trainer.fit()
    return save_model(trainer.unwrapped_model().eval(), tokenizer, tmp_path_factory.mktemp("memorised") / "model")


def attack(model, targets, out, **decoding):
    config = ExtractConfig(model=str(model), targets=targets, batch_size=4,
                           decoding=DecodingConfig(guesses=4, **decoding), exposure=ExposureConfig(candidates=100))
    return extract(config, out)


def test_extraction_recovers_memorised_secrets_and_not_unseen_ones(memorised, pii_dir, tmp_path):
    members = attack(memorised, pii_dir / "targets_member.jsonl", tmp_path / "members")
    nonmembers = attack(memorised, pii_dir / "targets_nonmember.jsonl", tmp_path / "nonmembers")
    assert members["targets"] == nonmembers["targets"] == MEMBERS
    assert members["nsr"] >= MEMBERS - 1 and members["rate"] == members["nsr"] / MEMBERS
    assert members["strategies"]["greedy"]["nsr"] >= MEMBERS - 1
    assert members["secret"]["nsr"] >= members["nsr"] and members["token_match"] > 0.9
    assert nonmembers["nsr"] == 0 and nonmembers["secret"]["nsr"] == 0
    assert nonmembers["token_match"] < 0.5
    # ssn and phone secrets have a digit format: ranked against 100 sampled candidates (cap log2(101) = 6.7)
    digit_secrets = sum(r["kind"] in ("ssn", "phone") for r in records(pii_dir, "member"))
    assert members["exposure"]["targets"] == digit_secrets >= 2 and members["exposure"]["methods"] == ["sampling"]
    # every memorised secret ranks first among its candidates (exposure at the cap); no unseen one does (the median
    # of the few unseen ones is no test: on one machine's corpora two of three ranked 2nd and 4th)
    cap = math.log2(101)
    exposures = {role: [json.loads(line)["exposure"] for line in (tmp_path / role / "generations.jsonl")
                        .read_text().splitlines()] for role in ("members", "nonmembers")}
    at_cap = {role: [e["exposure"] >= cap - 1e-9 for e in found if e] for role, found in exposures.items()}
    assert all(at_cap["members"]) and not any(at_cap["nonmembers"]) and len(at_cap["nonmembers"]) >= 2
    assert members["exposure"]["median"] > nonmembers["exposure"]["median"]
    rows = [json.loads(line) for line in (tmp_path / "members" / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == MEMBERS and set(rows[0]["strategies"]) == {"greedy", "beam", "sample"}
    assert len(rows[0]["strategies"]["sample"]["guesses"]) == 4
    exposed = next(r["exposure"] for r in rows if r["exposure"])
    assert exposed["exposure_skewnorm"] >= exposed["exposure"] - 1


def test_batched_generation_matches_one_prompt_at_a_time(micro_model, pii_dir):
    model, tokenizer = micro_model
    targets = read_targets(pii_dir / "targets_member.jsonl")[0] + read_targets(pii_dir / "targets_nonmember.jsonl")[0]
    prompts = tokenizer([t.prompt[:random.Random(i).randrange(20, 80)] for i, t in enumerate(targets)],
                        add_special_tokens=False)["input_ids"]
    assert len({len(p) for p in prompts}) > 3  # left padding is exercised
    kwargs = strategy_kwargs("greedy", DecodingConfig())
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    batched = generate_batched(model, prompts, [12] * len(prompts), pad_id=pad, eos_id=eos, kwargs=kwargs,
                               batch_size=5)
    single = [generate_batched(model, [p], [12], pad_id=pad, eos_id=eos, kwargs=kwargs, batch_size=1)[0]
              for p in prompts]
    assert batched == single


def test_cached_candidate_scores_equal_a_full_forward_pass(micro_model):
    model, tokenizer = micro_model
    prompt = tokenizer("In the beginning God created", add_special_tokens=False)["input_ids"]
    options = tokenizer([" the heaven", " 123-45-6789", " a"], add_special_tokens=False)["input_ids"]
    cached = continuation_logliks(model, prompt, options, batch_size=2, pad_id=tokenizer.pad_token_id)
    for option, score in zip(options, cached, strict=True):
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + option])).logits[0], -1)
        full = sum(logp[len(prompt) - 1 + j, token].item() for j, token in enumerate(option))
        assert score == pytest.approx(full, abs=1e-4)


def test_exposure_enumerates_small_formats_and_samples_large_ones():
    assert digit_format("123-45-6789") == "###-##-####"
    assert digit_format("(555) 010-2345") == "(###) ###-####"
    assert digit_format("jane.roe@example.org") is None and digit_format("no digits") is None
    everything, method, space = candidates("042", "###", ExposureConfig(), random.Random(0))
    assert method == "enumeration" and space == 1000 and len(set(everything)) == 1000 and "042" in everything
    sampled, method, space = candidates("123-45-6789", "###-##-####", ExposureConfig(candidates=50), random.Random(0))
    assert method == "sampling" and space == 10 ** 9 and len(set(sampled)) == 50 and "123-45-6789" not in sampled
    assert all(digit_format(c) == "###-##-####" for c in sampled)
    assert math.log2(space) > 29


def test_bad_targets_are_refused_with_a_clear_message(micro_run, data_dir, tmp_path, capsys):
    config = {"model": str(micro_run), "exposure": {"enabled": False}}
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(LetheError, match="does not exist"):
        extract(ExtractConfig(targets=missing, **config), tmp_path / "a")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(LetheError, match="holds no targets"):
        extract(ExtractConfig(targets=empty, **config), tmp_path / "b")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "prefix": "x", "secret": "y"}\n{"id": "b", "prefix": "x"}\n')
    with pytest.raises(LetheError, match="line 2 has no non-empty text field 'secret'"):
        read_targets(broken)
    book = json.loads((data_dir / "books" / "retain.jsonl").read_text().splitlines()[0])["text"]
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"id": "long", "prefix": book + " The SSN is ", "secret": "123-45-6789"}) + "\n")
    with pytest.raises(LetheError, match="'long': its prefix is \\d+ tokens .* context of 256 tokens"):
        extract(ExtractConfig(targets=long, **config), tmp_path / "c")
    assert main(["attack", "extract", "--model", str(micro_run), "--targets", str(empty), "--out",
                 str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "holds no targets" in err and len(err.strip().splitlines()) == 1


def test_targets_from_a_hub_data_set_split_are_the_same_targets(memorised, pii_dir, tmp_path, monkeypatch):
    """A Hub data set of PII records (its columns renamed by the options), read through `datasets`' own loader: the
    same targets and the same extraction as from the JSONL file, the split's source recorded in env.json."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = records(pii_dir, "member")
    repo = tmp_path / "lethe-test" / "pii"
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.table({"record": [r["id"] for r in rows], "prompt": [r["prefix"] for r in rows],
                             "answer": [r["secret"] for r in rows], "kind": [r["kind"] for r in rows]}),
                   repo / "data" / "members-00000-of-00001.parquet")
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: members\n"
                                    "    path: data/members-*.parquet\n---\n")
    monkeypatch.chdir(tmp_path)  # `load_dataset` finds lethe-test/pii as a repository directory, without a network
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    spec = "hf:lethe-test/pii?split=members&id_field=record&prefix_field=prompt&secret_field=answer"
    assert read_targets(spec)[0] == read_targets(pii_dir / "targets_member.jsonl")[0]
    from_hub = attack(memorised, spec, tmp_path / "hub", strategies=["greedy"])
    from_file = attack(memorised, pii_dir / "targets_member.jsonl", tmp_path / "file", strategies=["greedy"])
    assert from_hub["nsr"] == from_file["nsr"] >= MEMBERS - 1
    assert json.loads((tmp_path / "hub" / "env.json").read_text())["hub"][spec]["split"] == "members"
    with pytest.raises(LetheError, match="no column 'prefix'.*prefix_field="):
        read_targets("hf:lethe-test/pii?split=members")
