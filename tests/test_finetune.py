"""`lethe finetune` on the micro model and real text: full, head, LoRA, DP-SGD, and refused input."""

import json
import logging
import math

import pytest
import torch

from lethe.cli import main
from lethe.config import ChunkConfig, DPConfig, FinetuneConfig, TrainConfig, resolve
from lethe.data.chunking import Chunk, chunk_documents
from lethe.data.splits import load_splits
from lethe.engine import Trainer, objectives
from lethe.errors import LetheError
from lethe.models import load_model
from lethe.training.finetune import finetune

TRAIN = {"lr": 3e-3, "epochs": 2, "batch_size": 8, "warmup_ratio": 0}


def config(micro_run, data_dir, **overrides) -> FinetuneConfig:
    base = {"model": str(micro_run), "data": "books/approximate", "validation": "science/approximate",
            "data_dir": str(data_dir), "train": TRAIN}
    return resolve(FinetuneConfig, base, overrides)


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters()}


def test_full_finetuning_lowers_data_perplexity_and_records_the_run(micro_run, data_dir, tmp_path):
    results = finetune(config(micro_run, data_dir), tmp_path / "full")
    assert results["data_ppl"]["after"] < 0.9 * results["data_ppl"]["before"]
    assert results["parameters"]["trainable"] == results["parameters"]["total"]
    assert results["dp"] is None and results["train"]["steps"] > 0
    saved = json.loads((tmp_path / "full" / "results.json").read_text())
    assert saved["utility"]["val_ppl"] == results["utility"]["val_ppl"]
    for role in ("data", "validation"):
        for stage in ("before", "after"):
            assert (tmp_path / "full" / "scores" / role / f"{stage}.npz").is_file()
    assert json.loads((tmp_path / "full" / "run.json").read_text())["status"] == "done"
    load_model(tmp_path / "full")


def test_head_mode_leaves_everything_below_the_trained_blocks_bit_identical(micro_run, data_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="lethe"):
        results = finetune(config(micro_run, data_dir, mode="head", trainable_layers=1), tmp_path / "head")
    assert "shares its weight with the input embeddings" in caplog.text  # the micro model ties them
    original, tuned = parameters(load_model(micro_run)[0]), parameters(load_model(tmp_path / "head")[0])
    trained = {name for name in original if name.startswith("model.layers.1.") or name == "model.embed_tokens.weight"}
    assert results["parameters"]["trainable"] == sum(original[name].numel() for name in trained)
    for name, tensor in original.items():
        assert torch.equal(tuned[name], tensor) != (name in trained), name


def test_lora_trains_only_adapters_and_saves_a_merged_model(micro_run, data_dir, tmp_path):
    results = finetune(config(micro_run, data_dir, mode="lora", train={**TRAIN, "lr": 1e-2}), tmp_path / "lora")
    layers = 2  # micro: every linear layer of each block gets r·(in + out) adapter weights
    r, hidden, inner = 8, 64, 256
    assert results["parameters"]["trainable"] == layers * r * (4 * 2 * hidden + 3 * (hidden + inner))
    assert results["data_ppl"]["after"] < results["data_ppl"]["before"]
    original, merged = parameters(load_model(micro_run)[0]), parameters(load_model(tmp_path / "lora")[0])
    assert merged.keys() == original.keys()  # plain weights, no adapter left
    changed = {name for name, tensor in original.items() if not torch.equal(merged[name], tensor)}
    assert changed and all(name.endswith("proj.weight") for name in changed)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_dp_finetuning_reports_the_epsilon_opacus_accounts(mode, micro_run, data_dir, tmp_path, capsys):
    from opacus.accountants import create_accountant

    out = tmp_path / mode
    code = main(["finetune", "--model", str(micro_run), "--data", "books/approximate", "--validation",
                 "science/approximate", "--data-dir", str(data_dir), "--mode", mode, "--out", str(out),
                 "--set", "dp.epsilon=8", "--set", "train.lr=1e-2", "--set", "train.epochs=2"])
    assert code == 0
    assert "DP-SGD: ε = " in capsys.readouterr().out
    dp = json.loads((out / "results.json").read_text())["dp"]
    assert dp["delta"] == 10.0 ** math.floor(math.log10(1 / dp["samples"])) and dp["steps"] == dp["steps_planned"]
    accountant = create_accountant(dp["accountant"])
    accountant.history = [(dp["noise_multiplier"], dp["sample_rate"], dp["steps"])]
    assert dp["epsilon"] == pytest.approx(accountant.get_epsilon(dp["delta"]), rel=1e-9)
    assert 8 - 0.05 < dp["epsilon"] <= 8
    assert dp["sample_rate"] == 1 / math.ceil(dp["samples"] / 8)


@pytest.fixture(scope="module")
def chunks(micro_model, data_dir):
    _, tokenizer = micro_model
    docs = load_splits(data_dir, ["books/approximate"])["books/approximate"]
    return chunk_documents(docs, tokenizer, ChunkConfig(length=32, max_chunks_per_doc=1), context=256)


def test_opacus_per_sample_gradients_of_the_micro_model_are_exact(micro_run, chunks):
    """Tied embeddings (lm_head + embedding hooks summed) and LlamaRMSNorm (functorch) included."""
    from lethe.engine.dp_sgd import make_private
    from lethe.engine.trainer import collate

    model, tokenizer = load_model(micro_run)
    batch = collate([Chunk(c.id, c.doc_id, c.input_ids[:n]) for c, n in zip(chunks[:4], (32, 20, 11, 7), strict=True)],
                    tokenizer.pad_token_id)  # padded rows: padding must not leak into another row's gradient
    objective = objectives.get("lm_per_sample")()
    expected = []
    for row in range(4):
        model.zero_grad()
        objective(model, {"train": {k: v[row:row + 1, :int(batch["attention_mask"][row].sum())]
                                    for k, v in batch.items()}})[0].backward()
        expected.append({n: p.grad.clone() for n, p in model.named_parameters()})
    model.zero_grad()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    make_private(model, optimizer, DPConfig(epsilon=8), samples=64, batch_size=4, grad_accum=1, steps=1)
    objective(model, {"train": batch})[0].backward()
    for name, param in model.named_parameters():
        for row in range(4):
            torch.testing.assert_close(param.grad_sample[row], expected[row][name], atol=1e-6, rtol=1e-4)


class DataDependentGate(torch.nn.Module):
    """A trainable layer whose forward branches on its input: vmap, Opacus's fallback, cannot trace it."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.scale = inner, torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.inner(x) * self.scale if x.sum() > 0 else self.inner(x)


def test_layers_opacus_cannot_train_are_named(micro_run, chunks):
    def trainer(model, tokenizer):
        return Trainer(model, objectives.get("lm_per_sample")(), {"train": chunks},
                       TrainConfig(max_steps=1, batch_size=4, warmup_ratio=0), pad_id=tokenizer.pad_token_id,
                       dp=DPConfig(epsilon=8))

    model, tokenizer = load_model(micro_run)
    model.model.layers[0].mlp.norm = torch.nn.BatchNorm1d(64)
    with pytest.raises(LetheError, match=r"layer model\.layers\.0\.mlp\.norm \(BatchNorm1d\).*use mode lora"):
        trainer(model, tokenizer)
    model, tokenizer = load_model(micro_run)
    model.model.layers[1].mlp = DataDependentGate(model.model.layers[1].mlp)
    with pytest.raises(LetheError, match=r"layer model\.layers\.1\.mlp \(DataDependentGate\) with functorch"):
        trainer(model, tokenizer).fit()


def test_bad_input_is_refused_clearly(micro_run, data_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(LetheError, match="is empty"):
        finetune(config(micro_run, data_dir, data=str(empty)), tmp_path / "r1")
    with pytest.raises(LetheError, match="'science/missing' is neither a file nor a split"):
        finetune(config(micro_run, data_dir, validation="science/missing"), tmp_path / "r2")
    with pytest.raises(LetheError, match="validation: Field required"):
        resolve(FinetuneConfig, {"model": str(micro_run), "data": "books/approximate"})
    with pytest.raises(LetheError, match="overlap in 6 documents"):
        finetune(config(micro_run, data_dir, validation="books/approximate"), tmp_path / "r3")
    with pytest.raises(LetheError, match="train.lora is set but mode is 'full'"):
        config(micro_run, data_dir, train={"lora": {"r": 4}})
