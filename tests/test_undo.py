"""UNDO on the micro model: the perturbation and the distillation loss against hand computations, its budget, its
refusals, and a run through the CLI."""

import copy
import json
import math

import pytest
import torch

import lethe
from lethe.config import ChunkConfig, MethodArgs, UnlearnConfig
from lethe.data.chunking import chunk_documents
from lethe.data.roles import RunData
from lethe.data.splits import load_splits
from lethe.engine.trainer import collate
from lethe.errors import LetheError
from lethe.models import count_parameters, load_model, model_context
from lethe.unlearning.methods import MethodContext, methods
from lethe.unlearning.undo import Distillation, distillation_steps, perturb
from tests.conftest import unlearn_books


@pytest.fixture(scope="module")
def batch(micro_model, data_dir):
    _, tokenizer = micro_model
    docs = load_splits(data_dir, ["books/retain"])["books/retain"]
    chunks = chunk_documents(docs, tokenizer, ChunkConfig(length=16), context=256)
    short = next(c for c in chunks if len(c) < 16)  # a padded row
    return collate([chunks[0], short], tokenizer.pad_token_id)


def test_perturbation_mixes_each_weight_with_fresh_initialisation(micro_model):
    original, _ = micro_model
    perturbed = copy.deepcopy(original)
    perturb(perturbed, 0.25, seed=3)
    before, after = dict(original.named_parameters()), dict(perturbed.named_parameters())
    for name, weight in after.items():
        fresh = (weight.detach().double() - 0.75 * before[name].detach().double()) / 0.25
        if weight.ndim == 1:  # RMSNorm scales start at 1
            assert torch.allclose(fresh, torch.ones_like(fresh), atol=1e-5), name
        else:  # N(0, 0.02²), Hugging Face's initializer_range
            assert abs(fresh.mean().item()) < 2e-3 and fresh.std().item() == pytest.approx(0.02, rel=0.05), name
    assert "lm_head.weight" not in after  # tied to the embeddings: mixed once
    again = copy.deepcopy(original)
    perturb(again, 0.25, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), perturbed.parameters(), strict=True))
    other = copy.deepcopy(original)
    perturb(other, 0.25, seed=4)
    assert not torch.equal(other.model.embed_tokens.weight, perturbed.model.embed_tokens.weight)


def test_distillation_loss_is_the_teacher_to_student_kl_over_real_positions(micro_model, batch):
    teacher, _ = micro_model
    student = copy.deepcopy(teacher)
    perturb(student, 0.1, seed=0)
    objective = Distillation(copy.deepcopy(teacher).requires_grad_(False).eval())
    loss, logs = objective(student, {"distil": batch})

    with torch.no_grad():
        logp_teacher, logp_student = (torch.log_softmax(model(input_ids=batch["input_ids"],
                                                              attention_mask=batch["attention_mask"]).logits.double(),
                                                        -1) for model in (teacher, student))
    mask = batch["attention_mask"]
    terms = [float((logp_teacher[r, t].exp() * (logp_teacher[r, t] - logp_student[r, t])).sum())
             for r in range(mask.shape[0]) for t in range(mask.shape[1] - 1) if mask[r, t + 1]]  # t predicts t+1
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert logs["distil_kl"] == loss.item() > 0
    assert objective.reference_tokens == int(mask.sum())


def test_budget_buys_a_share_of_pretraining_flops_at_eight_flops_per_parameter_and_token():
    chunks = [[7] * 10, [7] * 30]  # anything with a length: 20 tokens a row on average
    # 0.2 × 6·N·10⁶ FLOPs at 8·N per token (student 6, teacher 2): 150,000 tokens, 160 tokens a step of 8 rows
    assert distillation_steps(0.2, 1e6, chunks, 8) == math.ceil(150_000 / 160)
    assert distillation_steps(1e-9, 1e6, chunks, 8) == 1


def test_base_method_and_settings(micro_model):
    model, _ = micro_model
    undo = methods.get("undo")
    assert not undo.uses_reference(MethodArgs())  # ga_gd_in reads no original model
    assert undo.uses_reference(MethodArgs(undo_method="npo"))
    npo_based = undo(MethodContext(reference=copy.deepcopy(model)), MethodArgs(undo_method="npo", npo_beta=0.3))
    assert npo_based.base.args.npo_beta == 0.3 and npo_based.groups == ("forget",) and npo_based.reads_logits
    assert undo(MethodContext(reference=None), MethodArgs()).groups == ("forget", "retain")
    with pytest.raises(LetheError, match=r"method_args\.undo_method: .*cannot be undo itself"):
        lethe.resolve(UnlearnConfig, {"model": "m", "method": "undo", "method_args": {"undo_method": "undo"}})
    unknown = r"method_args\.undo_method: unknown unlearning method 'gaa' \(known: adversarial, ga, "
    with pytest.raises(LetheError, match=unknown):
        lethe.resolve(UnlearnConfig, {"model": "m", "method": "undo", "method_args": {"undo_method": "gaa"}})
    with pytest.raises(LetheError, match="set pretrain_tokens"):
        undo(MethodContext(reference=None), MethodArgs()).prepare(model, UnlearnConfig(model="m"), None)
    assert undo(MethodContext(reference=None), MethodArgs()).extra_splits("code") == ["code/retain"]
    assert undo(MethodContext(reference=None), MethodArgs(undo_data="general")).extra_splits("code") == [
        "general/retain"]


def test_lethe_unlearn_method_undo_distils_for_its_budget(micro_run, data_dir, tmp_path):
    results = unlearn_books(micro_run, data_dir, tmp_path / "undo", "undo", {
        "method_args.undo_alpha": 0.3, "method_args.undo_budget": 0.05, "train.lr": 3e-3, "train.epochs": 3,
        "train.batch_size": 8, "train.warmup_ratio": 0})
    unlearned, distilled = results["train"]["phases"]["unlearn"], results["train"]["phases"]["distil"]
    assert unlearned["method"] == "ga_gd_in" and distilled["alpha"] == 0.3

    # its steps spend 5% of the pre-training compute (the micro run's tokens) on retain chunks of 8 rows
    pretrained = json.loads((micro_run / "results.json").read_text())["train"]["tokens"]
    model, tokenizer = load_model(micro_run)
    data = RunData.load(data_dir, "books", tokenizer, ChunkConfig(), model_context(model),
                        extra_splits=["books/retain"])
    assert distilled["steps"] == distillation_steps(0.05, pretrained, data.chunks["books/retain"], 8)
    assert distilled["teacher_tokens"] == distilled["tokens"]  # every distilled token forwarded through the teacher
    assert results["train"]["steps"] == unlearned["steps"] + distilled["steps"]
    assert results["train"]["tokens"] == unlearned["tokens"] + distilled["tokens"]
    n = count_parameters(model)
    assert results["cost"]["flops"] == pytest.approx(6 * n * results["train"]["tokens"]
                                                     + 2 * n * distilled["teacher_tokens"], rel=1e-12)
    kl = [h["distil_kl"] for h in results["train"]["history"] if "distil_kl" in h]
    assert len(kl) >= 2 and kl[-1] < kl[0]  # the perturbed copy moves towards the unlearned teacher
    before, after = results["before"]["ppl"], results["after"]["ppl"]
    assert after["forget"] / before["forget"] > after["approximate"] / before["approximate"] > 1
