"""Each unlearning objective against a value computed by hand on a fixed batch of real text."""

import math

import pytest
import torch
from pydantic import Field

from lethe.config import MethodArgs
from lethe.data.splits import load_splits
from lethe.engine.head import predict
from lethe.engine.trainer import collate
from lethe.errors import LetheError
from lethe.unlearning.methods import GradientAscent, MethodContext, logits_of, masked_kl, methods


@pytest.fixture(scope="module")
def batch(micro_model, data_dir):
    from lethe.config import ChunkConfig
    from lethe.data.chunking import chunk_documents

    _, tokenizer = micro_model
    docs = load_splits(data_dir, ["code/forget"])["code/forget"]
    chunks = chunk_documents(docs, tokenizer, ChunkConfig(length=24), context=256)
    short = next(c for c in chunks if len(c) < 24)  # a padded row
    eos = tokenizer.eos_token_id
    with_special = type(chunks[0])("eos", "eos", chunks[0].input_ids[:10] + (eos,) + chunks[0].input_ids[11:])
    return collate([with_special, short, chunks[1]], tokenizer.pad_token_id)


@pytest.fixture(scope="module")
def models(micro_model):
    """A model and a slightly different frozen reference, so ratios and KL are not trivially zero."""
    model, tokenizer = micro_model
    reference = type(model)(model.config)
    reference.load_state_dict(model.state_dict())
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    yield model, reference.eval(), tokenizer
    model.load_state_dict(reference.state_dict())


def make(name, models, **args):
    model, reference, tokenizer = models
    context = MethodContext(reference=reference, special_ids=tokenizer.all_special_ids, vocab_size=len(tokenizer))
    return methods.get(name)(context, MethodArgs(**args))


def real_positions(batch):
    """(row, t) for every real predicted token, the ground truth loops below walk over."""
    mask = batch["attention_mask"]
    return [(r, t) for r in range(mask.shape[0]) for t in range(mask.shape[1] - 1) if mask[r, t + 1]]


def logprobs(model, batch):
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.log_softmax(logits.double(), -1)


def test_every_registered_method_is_named_in_the_help(capsys):
    """The help's list (kept torch-free in lethe.config.base) is the registry's, so `lethe unlearn --help` and the
    config reference name every method a config may use."""
    from lethe.cli import main
    from lethe.config.base import UNLEARNING_METHODS

    assert sorted(UNLEARNING_METHODS) == sorted(methods.names())
    with pytest.raises(SystemExit):
        main(["unlearn", "--help"])
    listed = " ".join(capsys.readouterr().out.split())
    assert all(name in listed for name in ("rmu", "undo", "simnpo"))


def test_gradient_ascent_is_minus_cross_entropy(models, batch):
    model = models[0]
    logp = logprobs(model, batch)
    nll = [-logp[r, t, batch["input_ids"][r, t + 1]] for r, t in real_positions(batch)]
    with torch.no_grad():
        loss = make("ga", models).forget_loss(predict(model, batch), batch)
    assert loss.item() == pytest.approx(float(sum(nll) / len(nll)) * -1, rel=1e-5)


def test_adversarial_targets_are_the_originals_best_wrong_token(models, batch):
    method = make("adversarial", models)
    targets = method.adversarial_targets(batch)
    ref_logp = logprobs(models[1], batch)
    for r, t in real_positions(batch):
        true = batch["input_ids"][r, t + 1].item()
        assert targets[r, t].item() != true
        ranked = ref_logp[r, t].argsort(descending=True).tolist()
        assert targets[r, t].item() == (ranked[0] if ranked[0] != true else ranked[1])


def test_random_labels_keep_special_tokens_and_ignore_padding(models, batch, micro_model):
    _, tokenizer = micro_model
    method = make("random_label", models)
    targets = method.random_targets(batch)
    true = batch["input_ids"][:, 1:]
    special = true == tokenizer.eos_token_id
    assert special.any() and torch.equal(targets[special], true[special])
    real = batch["attention_mask"][:, 1:].bool() & ~special
    assert (targets[real] != true[real]).float().mean() > 0.9
    assert torch.equal(targets, method.random_targets(batch))  # reproducible for resumed runs
    # padded positions never contribute: the loss equals CE over real positions only
    logp = logprobs(models[0], batch)
    nll = [-logp[r, t, targets[r, t]] for r, t in real_positions(batch)]
    with torch.no_grad():
        assert method.forget_loss(predict(models[0], batch), batch).item() == pytest.approx(
            float(sum(nll) / len(nll)), rel=1e-5
        )


def test_kl_is_masked_to_real_tokens(models, batch):
    model, reference, _ = models
    p, q = logprobs(reference, batch), logprobs(model, batch)
    kls = [(p[r, t].exp() * (p[r, t] - q[r, t])).sum() for r, t in real_positions(batch)]
    with torch.no_grad():
        value = masked_kl(logits_of(reference, batch), logits_of(model, batch), batch).item()
        assert masked_kl(logits_of(reference, batch), logits_of(reference, batch), batch).item() == pytest.approx(
            0, abs=1e-6
        )
    assert value == pytest.approx(float(sum(kls) / len(kls)), rel=1e-4)
    everywhere = (p[:, :-1].exp() * (p[:, :-1] - q[:, :-1])).sum(-1).mean().item()
    assert value != pytest.approx(everywhere, rel=1e-3)  # averaging over padding would differ


def sequence_sums(model, batch):
    logp = logprobs(model, batch)
    sums = [0.0] * batch["input_ids"].shape[0]
    lengths = [0] * len(sums)
    for r, t in real_positions(batch):
        sums[r] += logp[r, t, batch["input_ids"][r, t + 1]].item()
        lengths[r] += 1
    return sums, lengths


@pytest.mark.parametrize("beta", [0.1, 0.7])  # the default, and one the method must read from method_args
def test_npo_matches_its_formula(models, batch, beta):
    model, reference, _ = models
    theta, _ = sequence_sums(model, batch)
    ref, _ = sequence_sums(reference, batch)
    terms = [math.log(1 / (1 + math.exp(beta * (a - b)))) for a, b in zip(theta, ref, strict=True)]
    expected = -(2 / beta) * sum(terms) / len(terms)
    with torch.no_grad():
        assert make("npo", models, npo_beta=beta).forget_loss(predict(model, batch), batch).item() == pytest.approx(
            expected, rel=1e-4
        )


def test_simnpo_matches_its_formula(models, batch):
    model = models[0]
    theta, lengths = sequence_sums(model, batch)
    beta, gamma = 2.5, 0.5
    terms = [math.log(1 / (1 + math.exp(beta / n * s + gamma))) for s, n in zip(theta, lengths, strict=True)]
    expected = -(2 / beta) * sum(terms) / len(terms)
    with torch.no_grad():
        value = (
            make("simnpo", models, simnpo_beta=beta, simnpo_gamma=gamma)
            .forget_loss(predict(model, batch), batch)
            .item()
        )
    assert value == pytest.approx(expected, rel=1e-4)


def test_retain_terms_combine_with_weight(models, batch):
    model, reference, _ = models
    method = make("ga_kl_general", models, retain_weight=0.5)
    assert method.groups == ("forget", "retain") and method.retain_data == "general"
    with torch.no_grad():
        loss, logs = method(model, {"forget": batch, "retain": batch})
        expected = make("ga", models).forget_loss(predict(model, batch), batch) + 0.5 * masked_kl(
            logits_of(reference, batch), logits_of(model, batch), batch
        )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(logs) == {"loss", "forget_loss", "retain_kl"}
    assert make("npo", models).groups == ("forget",)
    assert make("npo", models, retain_term="gd").groups == ("forget", "retain")
    assert make("ga_gd_in", models, retain_term="none").groups == ("forget",)


def test_each_method_sees_only_the_arguments_it_declares(models):
    args = {"npo_beta": 0.3, "simnpo_beta": 0.7, "simnpo_gamma": 0.2, "retain_weight": 0.5}
    assert make("npo", models, **args).args.model_dump() == {"npo_beta": 0.3}
    assert make("simnpo", models, **args).args.model_dump() == {"simnpo_beta": 0.7, "simnpo_gamma": 0.2}
    ga_gd = make("ga_gd_in", models, **args)
    assert ga_gd.args.model_dump() == {} and ga_gd.retain_weight == 0.5


def test_a_misspelled_or_invalid_method_argument_is_refused_by_name():
    from lethe.config import UnlearnConfig, UnlearningStudyConfig, resolve

    def unlearn(method: str, **args):
        return resolve(UnlearnConfig, {"model": "m", "method": method, "method_args": args})

    with pytest.raises(LetheError, match=r"^invalid config: unknown config key 'method_args\.npo_bta'$"):
        unlearn("npo", npo_bta=0.2)
    with pytest.raises(LetheError, match=r"method_args\.simnpo_gamma: Input should be greater than or equal to 0$"):
        unlearn("simnpo", simnpo_gamma=-1)
    with pytest.raises(LetheError, match=r"method_args\.npo_beta: must be a number, not true$"):
        unlearn("npo", npo_beta=True)
    # another method's argument is kept, unused: a study gives every method the same method_args
    assert unlearn("ga", npo_beta=0.3).method_args.npo_beta == 0.3
    study = resolve(UnlearningStudyConfig, {"model": "m", "unlearn": {"method_args": {"simnpo_beta": 2.0}}})
    assert study.unlearn.method_args.model_dump() == {
        "retain_weight": 1.0, "retain_ratio": 1, "retain_term": None, "retain_data": None,
        "npo_beta": 0.1, "simnpo_beta": 2.0, "simnpo_gamma": 0.0,
        "rmu_layer": None, "rmu_steering": 6.5, "rmu_alpha": 1200.0, "rmu_trainable_layers": None, "rmu_params": "mlp",
        "undo_method": "ga_gd_in", "undo_alpha": 0.5, "undo_data": "in_domain", "undo_budget": 0.1, "undo_lr": None}


class ScaledAscent(GradientAscent):
    """Gradient ascent times a factor: a method with an argument of its own, as a newcomer would add one."""

    class Args(GradientAscent.Args):
        scaled_ascent_factor: float = Field(1.0, gt=0, description="what the ascent is multiplied by")

    def forget_loss(self, logits, batch):
        return self.args.scaled_ascent_factor * super().forget_loss(logits, batch)


def test_a_new_method_declares_its_argument_in_its_own_class(models, batch, monkeypatch):
    monkeypatch.setitem(methods._entries, "scaled_ascent", ScaledAscent)
    assert MethodArgs().scaled_ascent_factor == 1.0
    with pytest.raises(ValueError, match="scaled_ascent_factor"):
        MethodArgs(scaled_ascent_factor=0)
    model = models[0]
    with torch.no_grad():
        ascent = make("ga", models).forget_loss(predict(model, batch), batch).item()
        scaled = make("scaled_ascent", models, scaled_ascent_factor=3.0).forget_loss(predict(model, batch), batch)
    assert scaled.item() == pytest.approx(3 * ascent, rel=1e-6)


def test_an_argument_declared_twice_is_refused(monkeypatch):
    class Clash(GradientAscent):
        class Args(GradientAscent.Args):
            retain_weight: float = 2.0

    monkeypatch.setitem(methods._entries, "clash", Clash)
    with pytest.raises(ValueError, match="Clash declares the argument 'retain_weight'"):
        MethodArgs()


def test_every_paper_method_and_more_is_registered():
    assert methods.names() == sorted(
        ["ga", "random_label", "adversarial", "ga_gd_in", "ga_kl_in", "ga_gd_general", "ga_kl_general", "npo", "simnpo",
         "rmu", "undo"]
    )
    with pytest.raises(LetheError, match="unknown unlearning method 'gd'"):
        methods.get("gd")



@pytest.mark.parametrize("name", ["npo", "adversarial"])
def test_reference_work_is_done_once_per_example_and_equals_the_per_step_values(name, micro_model, data_dir):
    from bench.per_step_reference import PER_STEP, frozen_copy
    from lethe.config import ChunkConfig, TrainConfig
    from lethe.data.chunking import chunk_documents
    from lethe.engine import Trainer

    original, tokenizer = micro_model
    docs = load_splits(data_dir, ["code/forget"])["code/forget"]
    chunks = chunk_documents(docs, tokenizer, ChunkConfig(length=32), context=256)
    # short chunks among full ones: padded batches, so the cache must hold each row at its own length
    chunks = [c for c in chunks if len(c) < 32][:4] + [c for c in chunks if len(c) == 32][:8]

    def train(method):
        context = MethodContext(reference=frozen_copy(original), special_ids=tokenizer.all_special_ids,
                                vocab_size=len(tokenizer))
        objective = method(context, MethodArgs())
        config = TrainConfig(epochs=2, batch_size=4, lr=1e-3, warmup_ratio=0, log_every=1)
        model = frozen_copy(original).requires_grad_(True)
        result = Trainer(model, objective, {"forget": chunks}, config, pad_id=tokenizer.pad_token_id).fit()
        return [h["loss"] for h in result.history], objective.reference_tokens

    cached, cached_tokens = train(methods.get(name))
    per_step, per_step_tokens = train(PER_STEP[name])
    assert len(cached) == 6 and cached[:3] == per_step[:3]  # first epoch: bit for bit
    assert cached[3:] == pytest.approx(per_step[3:], rel=1e-6)  # second: the same examples in other batches
    assert cached_tokens == sum(len(c) for c in chunks) and per_step_tokens == 2 * cached_tokens
