"""Memory for big models: gradient checkpointing, the reference model's placement and the memory estimate, checked
on the CPU against what PyTorch itself allocates."""

import copy
import logging

import pytest
import torch

from lethe.config import ChunkConfig, MethodArgs, TrainConfig
from lethe.data.chunking import chunk_documents
from lethe.data.splits import load_splits
from lethe.engine import Trainer
from lethe.engine.big_models import enable_gradient_checkpointing
from lethe.engine.head import fused_head
from lethe.engine.memory import ModelShape, block_bytes_per_token, check_fits, check_training_memory, estimate_memory
from lethe.engine.trainer import collate
from lethe.errors import LetheError
from lethe.unlearning.methods import MethodContext, methods
from lethe.unlearning.reference import PlacedReference, converted_copy, frozen_reference, uses_reference

LENGTH = 64


@pytest.fixture(scope="module")
def groups(micro_model, data_dir):
    _, tokenizer = micro_model
    documents = load_splits(data_dir, ["books/forget", "books/retain"])
    return {role: chunk_documents(documents[f"books/{role}"], tokenizer, ChunkConfig(length=LENGTH), 256)
            for role in ("forget", "retain")}


def trainable_copy(micro_model):
    return copy.deepcopy(micro_model[0]).requires_grad_(True).train()


def ga_gd(reference=None):
    return methods.get("ga_gd_in")(MethodContext(reference=reference), MethodArgs())


def gradients(model, batches) -> dict[str, torch.Tensor]:
    loss, _ = ga_gd()(model, batches)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_gradient_checkpointing_gives_the_same_gradients(micro_model, groups):
    # the shortest chunks beside full ones: padded batches
    batches = {role: collate(sorted(chunks, key=len)[:3] + chunks[:3], 0) for role, chunks in groups.items()}
    assert (batches["forget"]["attention_mask"] == 0).any()
    plain, checkpointed = trainable_copy(micro_model), trainable_copy(micro_model)
    enable_gradient_checkpointing(checkpointed)
    mlp_calls = []  # counted by wrapping forward: the recomputation runs no module hooks
    for block in checkpointed.model.layers:
        block.mlp.forward = lambda *args, run=block.mlp.forward: mlp_calls.append(1) or run(*args)
    expected, got = gradients(plain, batches), gradients(checkpointed, batches)
    # each block's MLP ran twice for each of the two batches (again in backward): the recomputation happened
    assert len(mlp_calls) == 2 * 2 * len(checkpointed.model.layers)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_the_train_option_checkpoints_and_trains_to_the_same_weights(micro_model, groups):
    weights = []
    for checkpointing in (False, True):
        config = TrainConfig(max_steps=2, batch_size=4, lr=1e-3, warmup_ratio=0, gradient_checkpointing=checkpointing)
        trainer = Trainer(trainable_copy(micro_model), ga_gd(), groups, config, pad_id=0)
        assert trainer.unwrapped_model().model.gradient_checkpointing == checkpointing
        trainer.fit()
        weights.append(trainer.unwrapped_model().state_dict())
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_a_model_without_checkpointing_is_refused_in_one_line():
    with pytest.raises(LetheError, match=r"^train.gradient_checkpointing: Linear does not support gradient "
                                         r"checkpointing .*; set it to false$"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))


def tracked_step(model, batches, checkpointing: bool, fused: bool = False) -> dict[str, int]:
    """PyTorch's own memory tracker over a second optimiser step (the first creates AdamW's state)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    if checkpointing:
        enable_gradient_checkpointing(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    objective = methods.get("ga")(MethodContext(reference=None), MethodArgs())  # one forward: what the tracker takes
    trained = fused_head(model, model)[0] if fused else model

    def step():
        loss, _ = objective(trained, batches)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    tracker = MemTracker()
    tracker.track_external(model, optimizer)
    with tracker:
        step()
    moments = sum(state[key].nbytes for state in optimizer.state.values() for key in ("exp_avg", "exp_avg_sq"))
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]
    return {str(kind).split(".")[-1]: value for kind, value in peak.items()} | {"moments": moments}


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_estimate_matches_what_pytorch_allocates(micro_model, groups, checkpointing, fused):
    batches = {"forget": collate([c for c in groups["forget"] if len(c) == LENGTH][:4], 0)}
    model = trainable_copy(micro_model)
    shape = ModelShape.of(model)
    parameters = sum(p.numel() for p in model.parameters())
    assert (shape.parameters, shape.hidden, shape.layers, shape.vocab) == (parameters, 64, 2, 2048)
    estimate = estimate_memory(shape, [(4, LENGTH)], checkpointing=checkpointing, fused_head=fused)
    measured = tracked_step(model, batches, checkpointing, fused)
    # exact: weights, AdamW's moments, and the gradients backward writes
    assert estimate.weights == measured["PARAM"] == 4 * parameters
    assert estimate.optimizer == measured["moments"]
    assert estimate.gradients == sum(p.numel() * p.element_size() for p in model.parameters())
    # estimates: what autograd keeps of the forward, and the head's backward (two vocabulary-wide float32 tensors;
    # fused: a block of rows and the head's weight gradient)
    if fused:  # the head's block work happens inside the forward, so the tracker files it with the activations
        assert estimate.activations + estimate.transient == pytest.approx(measured["ACT"] + measured["TEMP"], rel=0.05)
        assert estimate.activations < measured["ACT"] and measured["TEMP"] == 0
        return
    assert estimate.activations == pytest.approx(measured["ACT"], rel=0.05)
    assert estimate.transient == pytest.approx(measured["TEMP"], rel=0.05)


def saved_block_bytes_per_token(build, ids: torch.Tensor) -> float:
    """What autograd keeps of one block per token: the saved tensors' distinct storages, weights excluded, of a
    three-block model minus a one-block one, halved (so embeddings, head and loss cancel)."""
    def saved(model) -> int:
        seen, total = {p.untyped_storage().data_ptr() for p in model.parameters()}, 0

        def pack(tensor):
            nonlocal total
            if tensor.untyped_storage().data_ptr() not in seen:
                seen.add(tensor.untyped_storage().data_ptr())
                total += tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(input_ids=ids, labels=ids)
        return total

    return (saved(build(3).train()) - saved(build(1).train())) / 2 / ids.numel()


FAMILIES = {  # the four families Lethe is run on, at micro size: (config class, model class, size keys)
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(hidden_size=64, intermediate_size=176, num_attention_heads=4,
                                                      num_key_value_heads=2, attention_dropout="p")),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(hidden_size=64, intermediate_size=176, num_attention_heads=4,
                                                      num_key_value_heads=2, attention_dropout="p")),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=64, n_inner=176, n_head=4, n_positions=128, resid_pdrop="p",
                                                   embd_pdrop="p", attn_pdrop="p")),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(hidden_size=64, intermediate_size=176,
                                                             num_attention_heads=4, max_position_embeddings=128,
                                                             hidden_dropout="p", attention_dropout="p")),
}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_block_estimate_matches_what_autograd_keeps_in_each_family(family, dropout):
    import transformers

    config_class, model_class, sizes = FAMILIES[family]
    sizes = {key: dropout if value == "p" else value for key, value in sizes.items()}
    layers_key = "n_layer" if family == "gpt2" else "num_hidden_layers"

    def build(layers):
        torch.manual_seed(0)
        config = getattr(transformers, config_class)(vocab_size=512, **sizes, **{layers_key: layers})
        return getattr(transformers, model_class)(config)

    ids = torch.randint(0, 512, (2, LENGTH), generator=torch.Generator().manual_seed(0))
    shape = ModelShape.of(build(1))
    assert (shape.family, shape.attention_dropout) == (family, dropout)
    assert block_bytes_per_token(shape, False, LENGTH) == pytest.approx(saved_block_bytes_per_token(build, ids),
                                                                         rel=0.01)


def test_checkpointing_shrinks_the_activations_of_a_deep_model():
    shape = ModelShape(parameters=7_000_000_000, trainable=7_000_000_000, weight_bytes=2, hidden=4096, layers=32,
                       intermediate=11008, kv_hidden=4096, heads=32, vocab=32000)
    plain, checkpointed = (estimate_memory(shape, [(4, 4096), (4, 4096)], checkpointing=c, autocast_bytes=2)
                           for c in (False, True))
    assert plain.activations > 10 * checkpointed.activations
    assert plain.weights == checkpointed.weights == 14_000_000_000 and plain.optimizer == 2 * plain.gradients


def test_a_run_that_cannot_fit_is_refused_before_it_starts(micro_model, groups, monkeypatch, caplog):
    monkeypatch.setattr("lethe.engine.memory.device_memory", lambda device: (1024 ** 2, 0))  # 1 MiB free
    with pytest.raises(LetheError, match=r"this run needs about .* GiB on cpu but only 0.0 GiB is free .*"
                                         r"train.gradient_checkpointing=true"):
        Trainer(trainable_copy(micro_model), ga_gd(), groups, TrainConfig(batch_size=4), pad_id=0)
    with caplog.at_level(logging.INFO, logger="lethe"):  # only logged when told not to refuse
        Trainer(trainable_copy(micro_model), ga_gd(), groups, TrainConfig(batch_size=4, memory_check=False), pad_id=0)
    assert "memory estimate on cpu:" in caplog.text


def test_the_estimate_counts_only_the_reference_kept_on_the_device(micro_model):
    shape = ModelShape.of(micro_model[0])
    on_device = estimate_memory(shape, [(4, LENGTH)], reference_bytes=shape.parameters * 4, reference_tokens=4 * 64)
    offloaded = estimate_memory(shape, [(4, LENGTH)])
    assert on_device.total - offloaded.total == shape.parameters * 4
    check_fits(offloaded, torch.device("cpu"))  # no device memory to query on a CPU: nothing refused


def test_only_methods_that_read_the_original_model_get_one():
    for name, reads in {"ga": False, "ga_gd_in": False, "simnpo": False, "ga_kl_in": True, "npo": True,
                        "adversarial": True}.items():
        assert uses_reference(methods.get(name), MethodArgs()) is reads, name
    assert uses_reference(methods.get("ga"), MethodArgs(retain_term="kl"))
    assert not uses_reference(methods.get("ga_kl_in"), MethodArgs(retain_term="gd"))


def test_a_bfloat16_reference_converts_weights_and_keeps_buffers(micro_model):
    model = micro_model[0]
    reference = converted_copy(model, torch.device("cpu"), torch.bfloat16)
    assert {p.dtype for p in reference.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in reference.parameters())
    assert {b.dtype for b in reference.buffers()} == {b.dtype for b in model.buffers()}  # rotary frequencies
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the trained model is untouched
    ids = torch.randint(0, 2048, (2, 16))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        wrapped = PlacedReference(reference)(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert wrapped.device == ids.device and (wrapped.float() - expected).abs().max() < 0.1
    kept = converted_copy(model, torch.device("cpu"), None)  # already there, in that dtype: still a copy
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(kept.parameters(), model.parameters(), strict=True))
    with pytest.raises(LetheError, match="train.reference_model=bf16 is for GPUs"):
        frozen_reference(model, "bf16")
    same = frozen_reference(model, "same")
    assert same is not model and not same.training and not any(p.requires_grad for p in same.parameters())


def test_a_model_without_transformer_sizes_gets_no_estimate():
    assert check_training_memory(torch.nn.Linear(2, 2), ga_gd(), {}, TrainConfig(), torch.device("cpu")) is None


def test_unlearning_makes_the_reference_only_where_read_and_places_it_as_configured(micro_run, data_dir, tmp_path,
                                                                                     monkeypatch):
    from lethe.config import UnlearnConfig
    from lethe.unlearning import run
    from lethe.unlearning.evaluation import load_role_scores

    placements = []

    def recording(model, placement):
        placements.append(placement)
        return frozen_reference(model, placement)

    monkeypatch.setattr(run, "frozen_reference", recording)

    def unlearn(method, placement, out, **kwargs):
        config = UnlearnConfig.model_validate({
            "model": str(micro_run), "data": str(data_dir), "domain": "books", "method": method,
            "eval": {"blind": None},
            "train": {"lr": 3e-3, "max_steps": 2, "batch_size": 4, "warmup_ratio": 0, "reference_model": placement}})
        return run.unlearn(config, tmp_path / out, **kwargs)

    same = unlearn("ga_kl_in", "same", "same")
    original = load_role_scores(tmp_path / "same" / "scores" / "original", "books")
    on_cpu = unlearn("ga_kl_in", "cpu", "cpu", original_scores=original)
    assert placements == ["same", "cpu"]
    assert on_cpu["after"]["ppl"] == same["after"]["ppl"]  # on a CPU both are the same float32 copy
    unlearn("ga_gd_in", "cpu", "gd", original_scores=original)
    assert placements == ["same", "cpu"]  # gradient descent on retain reads no original model
