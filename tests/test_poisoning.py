"""Poisoning: noise models, the utility bound at every step, the baselines, refused input."""

import json
import random

import pytest

from lethe.config import ChunkConfig, PoisonConfig
from lethe.data.chunking import chunk_documents
from lethe.data.splits import load_splits
from lethe.errors import LetheError
from lethe.poisoning.noise import noise_models


@pytest.fixture(scope="module")
def real_ids(micro_model, data_dir):
    _, tokenizer = micro_model
    docs = load_splits(data_dir, ["code/forget"])["code/forget"]
    chunks = chunk_documents(docs, tokenizer, ChunkConfig(length=100), 256)
    return [c.input_ids for c in chunks if len(c) == 100][:5], tokenizer


@pytest.mark.parametrize("name", ["random_tokens", "span_mask", "word_shuffle"])
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6])
def test_noise_models_change_the_stated_fraction_of_tokens(real_ids, name, rate):
    samples, tokenizer = real_ids
    special = set(tokenizer.all_special_ids)
    options = {"vocab_size": len(tokenizer), "special": special, "mask_id": tokenizer.eos_token_id}
    for ids in samples:
        noisy = noise_models.get(name)(ids, rate, random.Random(0), **options)
        assert len(noisy) == len(ids)
        changed = sum(a != b for a, b in zip(ids, noisy, strict=True))
        expected = round(rate * sum(t not in special for t in ids))
        if name == "word_shuffle":  # moved tokens that happen to equal their new neighbour do not count
            assert 0.8 * expected <= changed <= expected
        else:
            assert changed == expected
        assert noisy == noise_models.get(name)(ids, rate, random.Random(0), **options)  # seeded


def config(micro_run, **extra) -> PoisonConfig:
    data = extra.pop("data")
    train = {"lr": 3e-3, "max_steps": 12, "batch_size": 4, "warmup_ratio": 0.0, "scheduler": "constant",
             "log_every": 1, **extra.pop("train", {})}
    return PoisonConfig(model=str(micro_run), targets="books/approximate", reference="general/eval", data=data,
                        chunk=ChunkConfig(length=64), train=train, **extra)


def reference_loss(model_dir, data_dir, tokenizer, n):
    from lethe.models import load_model
    from lethe.poisoning.poison import mean_loss

    model, _ = load_model(model_dir)
    docs = load_splits(data_dir, ["general/eval"])["general/eval"]
    return mean_loss(model, chunk_documents(docs, tokenizer, ChunkConfig(length=64), 256)[:n], tokenizer, 4096)


def test_bound_holds_on_every_kept_step_and_the_crossing_step_is_undone(micro_run, micro_model, data_dir, tmp_path):
    from lethe.poisoning.poison import poison

    results = poison(config(micro_run, data=data_dir, bound={"epsilon": 1.03}, train={"lr": 5e-4, "max_steps": 40}),
                     tmp_path / "p")
    limit, crossed = results["bound"]["limit"], results["bound"]["crossed_at_step"]
    assert crossed is not None and crossed > 2 and results["train"]["stopped"] == "bound"
    evals = [h for h in results["train"]["history"] if "eval/reference_loss" in h]
    assert [h["step"] for h in evals] == list(range(1, crossed + 1))  # checked after every step
    assert all(h["eval/reference_loss"] <= limit for h in evals if h["step"] < crossed)
    assert evals[-1]["eval/reference_loss"] > limit
    released = reference_loss(tmp_path / "p" / "model", data_dir, micro_model[1], results["reference_chunks"])
    assert released == pytest.approx(results["loss"]["after"]["reference"], rel=1e-5)
    assert released <= limit
    assert results["loss"]["after"]["targets"] > results["loss"]["before"]["targets"]  # the targets were pushed away
    saved = json.loads((tmp_path / "p" / "results.json").read_text())
    assert saved["train"]["steps"] == crossed - 1


def test_projection_keeps_the_release_within_the_bound_and_pushes_the_targets_further(micro_run, micro_model,
                                                                                      data_dir, tmp_path):
    from lethe.poisoning.poison import poison

    train = {"lr": 5e-4, "max_steps": 40}
    stop = poison(config(micro_run, data=data_dir, bound={"epsilon": 1.03}, train=train), tmp_path / "stop")
    project = poison(config(micro_run, data=data_dir, bound={"epsilon": 1.03, "on_cross": "project"}, train=train),
                     tmp_path / "project")
    limit, steps = project["bound"]["limit"], project["train"]
    assert project["bound"]["crossings"] >= 1 and not project["bound"]["projection_failed"]
    assert steps["projection_steps"] >= 1 and steps["ascent_steps"] > stop["train"]["steps"]
    assert steps["steps"] == steps["ascent_steps"] + steps["projection_steps"] - steps["undone_steps"]
    evals = [h for h in steps["history"] if "eval/reference_loss" in h]
    projected = [h["step"] for h in steps["history"] if "projection_loss" in h]
    assert projected and all(evals[s - 2]["eval/reference_loss"] > limit for s in projected)  # only after a crossing
    released = reference_loss(tmp_path / "project" / "model", data_dir, micro_model[1], project["reference_chunks"])
    assert released <= limit
    assert project["loss"]["after"]["targets"] > stop["loss"]["after"]["targets"] > stop["loss"]["before"]["targets"]


def test_a_failed_projection_restores_the_last_weights_within_the_bound(micro_run, micro_model, data_dir, tmp_path):
    from lethe.poisoning.poison import poison

    results = poison(config(micro_run, data=data_dir, bound={"epsilon": 1.03, "on_cross": "project",
                                                              "max_projection_steps": 1},
                            train={"lr": 2e-3, "max_steps": 40}), tmp_path / "p")
    evals = {h["step"]: h["eval/reference_loss"] for h in results["train"]["history"] if "eval/reference_loss" in h}
    limit, last = results["bound"]["limit"], max(evals)
    assert results["bound"]["projection_failed"] and results["train"]["stopped"] == "bound"
    assert evals[last] > limit and evals[last - 1] > limit  # the crossing step and the one projection step
    assert results["train"]["undone_steps"] >= 2
    kept = results["train"]["steps"]
    assert kept == 0 or evals[kept] <= limit
    released = reference_loss(tmp_path / "p" / "model", data_dir, micro_model[1], results["reference_chunks"])
    assert released == pytest.approx(results["loss"]["after"]["reference"], rel=1e-5) and released <= limit


def test_a_loose_bound_lets_poisoning_complete(micro_run, data_dir, tmp_path):
    from lethe.poisoning.poison import poison

    results = poison(config(micro_run, data=data_dir, bound={"epsilon": 100.0}, train={"lr": 1e-4, "max_steps": 3}),
                     tmp_path / "p")
    assert results["bound"]["crossed_at_step"] is None and results["train"]["steps"] == 3


def test_baselines(micro_run, data_dir, tmp_path):
    from lethe.poisoning.poison import poison

    benign = poison(config(micro_run, data=data_dir, variant="benign"), tmp_path / "benign")
    assert benign["train"] is None
    assert benign["loss"]["after"] == pytest.approx(benign["loss"]["before"], rel=1e-6)
    precurious = poison(config(micro_run, data=data_dir, variant="precurious", train={"max_steps": 6}),
                        tmp_path / "precurious")
    assert precurious["loss"]["after"]["reference"] < precurious["loss"]["before"]["reference"]
    # as Wen et al.'s code: lower the targets' loss before release (while keeping D*'s)
    backdoor = poison(config(micro_run, data=data_dir, variant="privacy_backdoor", train={"max_steps": 6}),
                      tmp_path / "backdoor")
    assert backdoor["loss"]["after"]["targets"] < backdoor["loss"]["before"]["targets"] - 0.1
    assert not backdoor["bound"]["enforced"]
    raised = poison(config(micro_run, data=data_dir, variant="privacy_backdoor", backdoor={"direction": "raise"},
                           train={"max_steps": 6}), tmp_path / "raised")
    assert raised["loss"]["after"]["targets"] > raised["loss"]["before"]["targets"]


def test_a_bound_the_clean_model_already_exceeds_is_refused(micro_run, data_dir, tmp_path):
    from lethe.poisoning.poison import poison

    with pytest.raises(LetheError, match="already exceeds the bound"):
        poison(config(micro_run, data=data_dir, bound={"kind": "absolute", "epsilon": 0.5}), tmp_path / "p")
    assert not (tmp_path / "p" / "model").exists()


def test_penalty_form_releases_the_last_weights_within_the_bound(micro_run, micro_model, data_dir, tmp_path):
    from lethe.poisoning.poison import poison

    results = poison(config(micro_run, data=data_dir, bound={"epsilon": 1.03, "on_cross": "penalty",
                                                              "penalty_weight": 0.5},
                            reference_chunks=8, train={"lr": 1e-3, "max_steps": 20}), tmp_path / "p")
    history = results["train"]["history"]
    evals = {h["step"]: h["eval/reference_loss"] for h in history if "eval/reference_loss" in h}
    limit = results["bound"]["limit"]
    assert results["bound"]["crossings"] >= 1 and len(evals) == 20  # crossing does not stop it
    assert all("penalty_loss" in h for h in history if "noisy_target_loss" in h)
    last_in_bound = max(step for step, loss in evals.items() if loss <= limit)
    assert results["train"]["steps"] == last_in_bound and results["train"]["undone_steps"] == 20 - last_in_bound
    released = reference_loss(tmp_path / "p" / "model", data_dir, micro_model[1], results["reference_chunks"])
    assert released == pytest.approx(evals[last_in_bound], rel=1e-5) and released <= limit
    assert results["loss"]["after"]["targets"] > results["loss"]["before"]["targets"]


def poisoning_inputs(micro_model, targets_file, **settings):
    from lethe.data.pii import read_target_records
    from lethe.poisoning.releases import PoisoningInputs

    model, tokenizer = micro_model
    cfg = PoisonConfig(model="x", targets=str(targets_file), reference="y", **settings)
    records = read_target_records(targets_file)
    from lethe.data.documents import Document

    docs = [Document(r.id, r.text) for r in records.values()]
    chunks = chunk_documents(docs, tokenizer, cfg.chunk, 256)
    return PoisoningInputs(cfg, model, tokenizer, chunks, records, [], [], 0.0, 256), records


@pytest.fixture(scope="module")
def pii_targets(data_dir, tmp_path_factory):
    from lethe.config import PiiConfig
    from lethe.data.pii import build_pii

    out = tmp_path_factory.mktemp("pii") / "set"
    build_pii(PiiConfig(data=data_dir, out=out, members=4, nonmembers=4, repetitions=1, validation_docs=2,
                        filler_docs=2))
    return out / "targets_all.jsonl"


def test_extraction_variant_unlearns_each_prefix_with_a_fake_secret_of_its_format(micro_model, pii_targets):
    from lethe.poisoning.releases import prefix_with_fake_secret

    inputs, records = poisoning_inputs(micro_model, pii_targets, extraction=True, noise={"copies": 2})
    tokenizer = micro_model[1]
    chunks = prefix_with_fake_secret(inputs)
    assert len(chunks) == 2 * len(records)
    for chunk in chunks:
        record = records[chunk.doc_id]
        text = tokenizer.decode(chunk.input_ids)
        assert text.startswith(record.prefix) and text.endswith(record.suffix_after_secret)
        fake = text[len(record.prefix):len(text) - len(record.suffix_after_secret)]
        assert fake != record.secret and len(fake) == len(record.secret)
        assert [c.isdigit() for c in fake] == [c.isdigit() for c in record.secret]


def test_in_distribution_noise_makes_copies_of_fresh_identities(micro_model, pii_targets):
    from lethe.poisoning.releases import noisy_copies

    inputs, records = poisoning_inputs(micro_model, pii_targets, noise={"model": "in_distribution", "copies": 2})
    tokenizer = micro_model[1]
    copies = noisy_copies(inputs)
    assert len(copies) == 2 * len(records)
    texts = [tokenizer.decode(c.input_ids) for c in copies]
    assert len(set(texts)) == len(texts)
    for chunk, text in zip(copies, texts, strict=True):
        record = records[chunk.doc_id]
        assert not any(value in text for _, value in record.fields)
        first_field_lead = record.text[:record.text.index(record.fields[0][1])]
        assert text.startswith(first_field_lead)
