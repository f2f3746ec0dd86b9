"""RMU on the micro model: its loss against a hand computation, the parameters it trains, refusals, a CLI run."""

import copy

import pytest
import torch
from safetensors.torch import load_file

import lethe
from lethe.config import ChunkConfig, MethodArgs, UnlearnConfig
from lethe.data.chunking import chunk_documents
from lethe.data.splits import load_splits
from lethe.engine.trainer import collate
from lethe.errors import LetheError
from lethe.unlearning.methods import MethodContext, methods
from lethe.unlearning.rmu import activations_at, decoder_layers
from tests.conftest import unlearn_books


@pytest.fixture(scope="module")
def batches(micro_model, data_dir):
    """Real forget and retain text of books, each batch with a padded row."""
    _, tokenizer = micro_model
    docs = load_splits(data_dir, ["books/forget", "books/retain"])
    out = {}
    for role in ("forget", "retain"):
        chunks = chunk_documents(docs[f"books/{role}"], tokenizer, ChunkConfig(length=20), context=256)
        short = next(c for c in chunks if len(c) < 20)
        out[role] = collate([chunks[0], short, chunks[1]], tokenizer.pad_token_id)
    return out


@pytest.fixture
def models(micro_model):
    """A trained copy a little away from the frozen original, so the retain term is not zero."""
    original, tokenizer = micro_model
    trained = copy.deepcopy(original)
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in trained.parameters():
            weight.add_(0.01 * torch.randn_like(weight))
    reference = copy.deepcopy(original).requires_grad_(False).eval()
    return trained, reference, tokenizer


def rmu(models, seed=5, **args):
    trained, reference, _ = models
    method = methods.get("rmu")(MethodContext(reference=reference), MethodArgs(**args))
    method.prepare(trained, UnlearnConfig(model="m", train={"seed": seed}), None)
    return method


def hand_mse(activations, target, mask):
    """Σ over real tokens of the mean squared difference over the hidden dimensions, over the real tokens' count."""
    total, count = 0.0, 0
    for row in range(mask.shape[0]):
        for position in range(mask.shape[1]):
            if mask[row, position]:
                difference = activations[row, position].double() - target[row, position].double()
                total += float((difference ** 2).sum()) / difference.numel()
                count += 1
    return total / count


def test_loss_is_the_forget_and_retain_activation_mse(models, batches):
    trained, reference, _ = models
    method = rmu(models, rmu_layer=0, rmu_steering=4.0, rmu_alpha=3.0)
    loss, logs = method(trained, batches)

    def layer_output(model, batch):  # hidden_states[ℓ + 1] is block ℓ's output (0: the embeddings)
        with torch.no_grad():
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         output_hidden_states=True).hidden_states[1]

    direction = torch.rand(64, generator=torch.Generator().manual_seed(5))  # train.seed draws u
    target = (4.0 * direction / direction.norm()).expand_as(layer_output(trained, batches["forget"]))
    forget = hand_mse(layer_output(trained, batches["forget"]), target, batches["forget"]["attention_mask"])
    retain = hand_mse(layer_output(trained, batches["retain"]), layer_output(reference, batches["retain"]),
                      batches["retain"]["attention_mask"])
    assert retain > 0
    assert logs["forget_loss"] == pytest.approx(forget, rel=1e-5)
    assert logs["retain_activations"] == pytest.approx(retain, rel=1e-5)
    assert loss.item() == pytest.approx(forget + 3.0 * retain, rel=1e-5)
    assert method.reference_tokens == int(batches["retain"]["attention_mask"].sum())

    # without the retain term the objective reads the forget batch alone
    alone = rmu(models, rmu_layer=0, rmu_steering=4.0, retain_term="none")
    assert alone.groups == ("forget",)
    assert alone(trained, {"forget": batches["forget"]})[0].item() == pytest.approx(forget, rel=1e-5)


def test_only_the_chosen_parameters_train_and_a_wrapped_forward_reads_the_same_layer(models, batches):
    trained, _, _ = models
    method = rmu(models)  # micro has 2 layers: the default ℓ = ⌊7·2/32⌋ = 0, and the MLPs of layers 0..0 train
    assert method.layer == 0
    trainable = {name for name, weight in trained.named_parameters() if weight.requires_grad}
    assert trainable == {f"model.layers.0.mlp.{part}.weight" for part in ("gate_proj", "up_proj", "down_proj")}
    loss, _ = method(trained, batches)
    loss.backward()
    assert all((weight.grad is not None) == weight.requires_grad for weight in trained.parameters())

    class Wrapper(torch.nn.Module):  # like DDP: not a bare model, so its forward is not cut short
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **inputs):
            return self.inner(**inputs)

    layer = decoder_layers(trained)[0]
    assert torch.equal(activations_at(trained, layer, batches["forget"]),
                       activations_at(Wrapper(trained), layer, batches["forget"]))

    wider = rmu(models, rmu_layer=1, rmu_trainable_layers=[0, 1], rmu_params=r"mlp\.down_proj|self_attn\.o_proj")
    assert wider.layer == 1
    assert {name for name, weight in trained.named_parameters() if weight.requires_grad} == {
        f"model.layers.{i}.{part}.weight" for i in (0, 1) for part in ("mlp.down_proj", "self_attn.o_proj")}


@pytest.mark.parametrize(("args", "message"), [
    ({"rmu_layer": 2}, "rmu_layer 2 is past the model's last layer \\(1\\)"),
    ({"rmu_layer": 0, "rmu_trainable_layers": [1]}, "must lie in 0..0"),
    ({"rmu_params": "no_such_weight"}, "matches no parameter of layers \\[0\\]"),
])
def test_settings_that_cannot_run_are_refused(models, args, message):
    with pytest.raises(LetheError, match=message):
        rmu(models, **args)


def test_retain_terms_and_lora_of_other_methods_are_refused(models):
    trained, reference, _ = models
    with pytest.raises(LetheError, match="rmu's retain term is its own"):
        methods.get("rmu")(MethodContext(reference=reference), MethodArgs(retain_term="gd"))
    with pytest.raises(LetheError, match=r"method_args\.rmu_params: .*not a regular expression"):
        lethe.resolve(UnlearnConfig, {"model": "m", "method": "rmu", "method_args": {"rmu_params": "mlp("}})
    method = methods.get("rmu")(MethodContext(reference=reference), MethodArgs())
    with pytest.raises(LetheError, match="unset train.lora"):
        method.prepare(trained, UnlearnConfig(model="m", train={"lora": {}}), None)


def test_lethe_unlearn_method_rmu_changes_only_the_chosen_weights_and_forgets(micro_run, data_dir, tmp_path):
    out = tmp_path / "rmu"
    results = unlearn_books(micro_run, data_dir, out, "rmu", {
        "method_args.rmu_steering": 10, "method_args.rmu_alpha": 10, "train.lr": 3e-3, "train.epochs": 3,
        "train.batch_size": 8, "train.warmup_ratio": 0})
    before, after = results["before"]["ppl"], results["after"]["ppl"]
    assert after["forget"] / before["forget"] > after["approximate"] / before["approximate"] > 1
    assert results["cost"]["reference_tokens"] > 0  # the original's retain activations, every step
    original, unlearned = load_file(micro_run / "model" / "model.safetensors"), load_file(out / "model" /
                                                                                          "model.safetensors")
    changed = {name for name in original if not torch.equal(original[name], unlearned[name])}
    assert changed == {f"model.layers.0.mlp.{part}.weight" for part in ("gate_proj", "up_proj", "down_proj")}
