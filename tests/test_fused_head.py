"""The fused head: mean cross-entropies from the final hidden states, against float64 and against the logits path."""

import copy

import pytest
import torch
import torch.nn.functional as F

from lethe.config import ChunkConfig, MethodArgs, TrainConfig
from lethe.data.chunking import chunk_documents
from lethe.data.splits import load_splits
from lethe.engine import Trainer, objectives
from lethe.engine import losses as losses_module
from lethe.engine.head import FusedHead, fused_head, predict
from lethe.engine.losses import LinearCrossEntropySum
from lethe.engine.trainer import collate
from lethe.unlearning.methods import MethodContext, methods


def float64_case(rows=300, width=24, vocab=512, seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, width, generator=generator, dtype=torch.float64)
    weight = torch.randn(vocab, width, generator=generator, dtype=torch.float64) * 0.3
    bias = torch.randn(vocab, generator=generator, dtype=torch.float64) * 0.1
    targets = torch.randint(0, vocab, (rows,), generator=generator)
    targets[::7] = -100
    targets[64:128] = -100  # a whole block of ignored rows
    return hidden, weight, bias, targets


def test_loss_and_every_gradient_match_float64_across_blocks(monkeypatch):
    monkeypatch.setattr(losses_module, "ROW_BLOCK_FLOATS", 64 * 512)  # blocks of 64 rows: five blocks, one ignored
    monkeypatch.setattr(losses_module, "MIN_HEAD_BLOCK_ROWS", 1)
    hidden, weight, bias, targets = float64_case()
    factor = -0.37  # a loss's weight in an objective (negative: gradient ascent)
    inputs64 = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    exact = F.cross_entropy(F.linear(*inputs64), targets, reduction="sum")
    exact_grads = torch.autograd.grad(factor * exact, inputs64)
    inputs32 = [t.float().requires_grad_() for t in (hidden, weight, bias)]
    fused = LinearCrossEntropySum.apply(*inputs32, targets)
    fused_grads = torch.autograd.grad(factor * fused, inputs32)
    assert fused.item() == pytest.approx(exact.item(), rel=1e-6)
    for got, want in zip(fused_grads, exact_grads, strict=True):
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-4)
    assert fused_grads[0][64:128].abs().max() == 0  # ignored rows pass no gradient back


def test_a_large_vocabulary_is_worked_through_in_blocks_of_at_least_128_rows():
    """A cache-sized block of a 49,152-token head would be 21 rows, a skinny matmul re-reading the whole head each
    time; blocks keep at least 128 rows there, while small vocabularies keep their cache-sized blocks."""
    assert losses_module.head_block_rows(49152) == 128 and losses_module.head_block_rows(2048) == 512
    hidden, weight, _, targets = float64_case(rows=300, width=8, vocab=49152)
    calls = []
    real_linear = F.linear

    def counting_linear(*args):
        calls.append(args[0].shape[0])
        return real_linear(*args)

    inputs = [t.clone().requires_grad_() for t in (hidden, weight)]
    exact = F.cross_entropy(F.linear(*inputs), targets, reduction="sum")
    exact_grads = torch.autograd.grad(exact, inputs)
    fused_inputs = [t.clone().requires_grad_() for t in (hidden, weight)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(losses_module.F, "linear", counting_linear)
        fused = LinearCrossEntropySum.apply(*fused_inputs, None, targets)
    assert calls == [128, 128, 44]  # three blocks of 300 rows (none wholly ignored)
    assert fused.item() == pytest.approx(exact.item(), rel=1e-6)  # float32 log-softmax, as every block's
    for got, want in zip(torch.autograd.grad(fused, fused_inputs), exact_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_a_frozen_input_gets_no_gradient_and_the_others_are_unchanged():
    hidden, weight, bias, targets = (t.float() if t.is_floating_point() else t for t in float64_case())
    full = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    everything = torch.autograd.grad(LinearCrossEntropySum.apply(*full, targets), full)
    head_only = [hidden.clone(), weight.clone().requires_grad_(), bias.clone().requires_grad_()]  # a frozen body
    loss = LinearCrossEntropySum.apply(*head_only, targets)
    weight_grad, bias_grad = torch.autograd.grad(loss, head_only[1:])
    torch.testing.assert_close(weight_grad, everything[1])
    torch.testing.assert_close(bias_grad, everything[2])
    frozen_head = [hidden.clone().requires_grad_(), weight.clone(), None]  # LoRA leaves the head frozen
    (hidden_grad,) = torch.autograd.grad(LinearCrossEntropySum.apply(*frozen_head, targets), frozen_head[:1])
    no_bias = torch.autograd.grad(F.cross_entropy(F.linear(frozen_head[0], weight), targets, reduction="sum"),
                                  frozen_head[:1])[0]
    torch.testing.assert_close(hidden_grad, no_bias)


@pytest.fixture(scope="module")
def setup(micro_model, data_dir):
    model, tokenizer = micro_model
    docs = load_splits(data_dir, ["code/forget", "code/retain"])
    chunks = {name: chunk_documents(docs[split], tokenizer, ChunkConfig(length=48), context=256)[:24]
              for name, split in (("forget", "code/forget"), ("retain", "code/retain"))}
    return model, tokenizer, chunks


def gradients(model, loss):
    model.zero_grad()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["ga_gd_in", "random_label", "adversarial", "npo", "ga_kl_in"])
def test_each_method_through_the_fused_head_equals_its_logits_path(setup, name):
    model, tokenizer, chunks = setup
    model = copy.deepcopy(model)
    context = MethodContext(reference=copy.deepcopy(model).eval(), special_ids=tokenizer.all_special_ids,
                            vocab_size=len(tokenizer))
    batches = {group: collate(chunks[group][:6], tokenizer.pad_token_id) for group in ("forget", "retain")}
    fused, why = fused_head(model, model)
    assert isinstance(fused, FusedHead), why
    plain_loss, plain_logs = methods.get(name)(context, MethodArgs())(model, batches)
    fused_loss, fused_logs = methods.get(name)(context, MethodArgs())(fused, batches)
    assert fused_loss.item() == pytest.approx(plain_loss.item(), rel=1e-5, abs=1e-6)
    assert fused_logs.keys() == plain_logs.keys()
    want, got = gradients(model, plain_loss), gradients(model, fused_loss)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-4)


def test_the_trainer_fuses_the_head_by_default_and_trains_the_same(setup):
    model, tokenizer, chunks = setup
    runs = {}
    for fused in (True, False):
        trainer = Trainer(copy.deepcopy(model), methods.get("ga_gd_in")(MethodContext(reference=None), MethodArgs()),
                          chunks, TrainConfig(lr=1e-3, max_steps=3, batch_size=4, log_every=1, fused_head=fused),
                          pad_id=tokenizer.pad_token_id)
        assert isinstance(trainer.training_model, FusedHead) == fused
        result = trainer.fit()
        runs[fused] = [record["loss"] for record in result.history], trainer.unwrapped_model().state_dict()
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-5)  # a difference of two losses: absolute
    for key, tensor in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][key], tensor, atol=1e-5, rtol=1e-4)


def test_the_memory_estimate_counts_the_logits_only_where_they_are_kept(setup, monkeypatch):
    model, tokenizer, chunks = setup
    estimates = []
    monkeypatch.setattr("lethe.engine.memory.check_fits", lambda estimate, *_, **__: estimates.append(estimate))
    for method, fused in (("ga", True), ("ga", False), ("simnpo", True)):
        Trainer(copy.deepcopy(model), methods.get(method)(MethodContext(reference=None), MethodArgs()),
                {"forget": chunks["forget"]}, TrainConfig(max_steps=1, batch_size=4, warmup_ratio=0, fused_head=fused),
                pad_id=tokenizer.pad_token_id)
    fused_ga, logits_ga, simnpo = estimates  # the same forget batches; SimNPO reads its logits
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    assert logits_ga.activations - fused_ga.activations == simnpo.activations - fused_ga.activations > 0
    assert (logits_ga.activations - fused_ga.activations) % (4 * (vocab - hidden)) == 0
    assert logits_ga.transient == simnpo.transient != fused_ga.transient


class ScaledLogits(torch.nn.Module):
    """A causal LM whose logits are its head's output times two (as logit-scaled architectures do)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.base_model_prefix = "inner"

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    @property
    def base_model(self):
        return self.inner.model

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0):
        output = self.inner(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep)
        output.logits = 2 * output.logits
        return output


def test_a_head_that_is_not_a_plain_linear_map_keeps_the_logits(setup):
    model, tokenizer, chunks = setup
    scaled = ScaledLogits(copy.deepcopy(model))
    fused, why = fused_head(scaled, scaled)
    assert fused is None and "scaled or capped" in why
    batch = collate(chunks["retain"][:4], tokenizer.pad_token_id)
    trainer = Trainer(scaled, objectives.get("lm")(), {"train": chunks["retain"]},
                      TrainConfig(max_steps=1, batch_size=4, warmup_ratio=0), pad_id=tokenizer.pad_token_id)
    assert trainer.training_model is trainer.model
    assert predict(trainer.training_model, batch).computed_logits is not None


def test_gpt2_heads_are_fused_too(setup):
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tokenizer, chunks = setup
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=len(tokenizer), n_positions=64)).eval()
    fused, why = fused_head(gpt2, gpt2)
    assert isinstance(fused, FusedHead), why
    batch = collate(chunks["retain"][:4], tokenizer.pad_token_id)
    loss = objectives.get("lm")()
    assert loss(fused, {"train": batch})[0].item() == pytest.approx(loss(gpt2, {"train": batch})[0].item(), rel=1e-5)
