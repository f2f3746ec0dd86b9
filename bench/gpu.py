#!/usr/bin/env python
"""GPU benchmark: the unlearning step on one GPU in bf16, Lethe's Trainer vs the Hugging Face `Trainer` reference.

For a ~135M (SmolLM2-135M's shape) and a ~1.2B (Llama-3.2-1B's shape) Llama-style model built from a
`LlamaConfig` with random weights (nothing is downloaded), and random tokens:

- tokens/s and model-FLOP utilisation (6·N FLOPs per trained token over a bf16 `torch.mm` peak measured in the
  same run) of a ga_gd_in step (−CE(forget) + CE(retain)), Lethe's `Trainer` and the HF `Trainer` + GradDiff
  `compute_loss` of bench/unlearning_step.py side by side, each with gradient checkpointing off and on, with the
  first losses compared (parity);
- Lethe's memory estimate (lethe/engine/memory.py) beside the peak memory PyTorch allocated;
- an FSDP smoke test: bench/fsdp_smoke.py under `accelerate launch` with configs/accelerate/fsdp.yaml in one
  process, and alone, with the two saved models' losses on held-out tokens compared.

Timing is bench/unlearning_step.py's: `steps` timed optimiser steps after a warm-up step, the clock read at the
start of every step's loss computation. Weights are float32 with bf16 autocast on both sides (Lethe's
train.mixed_precision=bf16, HF's bf16=True).

    python bench/gpu.py --out bench/results/gpu          # one GPU: under 10 minutes on an H200
    python bench/gpu.py --small --out /tmp/gpu-small     # CPU, float32, a 2-block model: the pipeline in seconds
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.common import (  # noqa: E402
    command_line,
    machine_info,
    matmul_peak_gflops,
    quiet_libraries,
    quiet_output,
)
from bench.unlearning_step import (  # noqa: E402
    LOSS_CHECK_STEPS,
    LOSS_TOLERANCE,
    ForgetRetainPairs,
    PairCollator,
    TimedObjective,
    lethe_order,
    reference_trainer_class,
    window,
)


@dataclass(frozen=True)
class Size:
    shape: dict
    batch: int  # forget (and retain) sequences per step
    length: int  # tokens per sequence


SIZES = {
    "135m": Size({"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                  "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}, batch=8, length=2048),
    "1b": Size({"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True}, batch=4, length=2048),
    "small": Size({"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "vocab_size": 512, "tie_word_embeddings": False}, batch=2, length=32),
}
BF16_LOSS_TOLERANCE = 2e-2  # bf16 autocast rounds differently in the two libraries' kernels orders


def build_model(size: str, device: str):
    """A Llama-style model of `size`'s shape with seeded random float32 weights, made directly on `device`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = SIZES[size]
    config = LlamaConfig(**spec.shape, max_position_embeddings=spec.length, attn_implementation="sdpa",
                         pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(config)


def random_groups(spec: Size, steps: int, seed: int = 0) -> dict:
    """Full-length random-token chunks, a fresh batch of each group per step: no padding, so every step trains on
    exactly 2 · batch · length tokens on both sides."""
    from lethe.data.chunking import Chunk

    generator = torch.Generator().manual_seed(seed)
    vocab = spec.shape["vocab_size"]
    return {role: [Chunk(f"{role}-{i}", f"{role}-{i}",
                         tuple(torch.randint(1, vocab, (spec.length,), generator=generator).tolist()))
                   for i in range(spec.batch * steps)] for role in ("forget", "retain")}


def pad_only_tokenizer():
    """The reference's collator pads with `tokenizer.pad`; the chunks are token ids already, so a tokenizer that
    knows only its padding token is all it needs."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<pad>": 0}, unk_token="<pad>")),
                                   pad_token="<pad>", padding_side="right")


def bf16_matmul_peak(n: int = 8192, tries: int = 10) -> dict:
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(tries):
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return {"n": n, "dtype": "bfloat16", "best_s": best, "gflops": 2 * n ** 3 / best / 1e9}


def peak_memory(device: str) -> int | None:
    return torch.cuda.max_memory_allocated() if device == "cuda" else None


def reset_memory(device: str) -> None:
    if device == "cuda":
        gc.collect()  # the previous run's trainer and Accelerator hold their model in reference cycles
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_lethe(base, groups, spec: Size, total_steps: int, checkpointing: bool, device: str) -> dict:
    from lethe.config import MethodArgs, TrainConfig
    from lethe.engine import Trainer
    from lethe.engine.memory import check_training_memory
    from lethe.unlearning.methods import MethodContext, methods

    objective = TimedObjective(methods.get("ga_gd_in")(MethodContext(reference=None), MethodArgs()))
    config = TrainConfig(max_steps=total_steps, batch_size=spec.batch, lr=2e-5, warmup_ratio=0.03, log_every=1,
                         mixed_precision="bf16" if device == "cuda" else "no", gradient_checkpointing=checkpointing)
    reset_memory(device)
    trainer = Trainer(copy.deepcopy(base), objective, groups, config, pad_id=0, desc="bench")
    estimate = check_training_memory(trainer.unwrapped_model(), objective, trainer.streams, config,
                                     trainer.accelerator.device)
    result = trainer.fit()
    history = [h for h in result.history if "loss" in h]
    return {"marks": objective.marks, "losses": [h["loss"] for h in history], "optimizer": "AdamW (fused)",
            "memory": {"estimate_bytes": estimate.total, "estimate": estimate.summary(),
                       "peak_allocated_bytes": peak_memory(device)}}


def run_reference(base, groups, spec: Size, total_steps: int, checkpointing: bool, device: str, workdir: Path) -> dict:
    from transformers import TrainerCallback, TrainingArguments

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    # the option's name in recent transformers 5; the old one warns there
    name = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
            else "gradient_checkpointing")
    order = lethe_order(groups, spec.batch, 0, total_steps)  # the batches Lethe's seeded streams deal, in order

    def item(chunk) -> dict:
        return {"input_ids": list(chunk.input_ids), "attention_mask": [1] * len(chunk)}

    dataset = ForgetRetainPairs(*([item(groups[role][i]) for step in order[role] for i in step]
                                  for role in ("forget", "retain")))
    clock = StepClock()
    arguments = TrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=spec.batch, max_steps=total_steps,
        learning_rate=2e-5, lr_scheduler_type="cosine", warmup_steps=0.03, weight_decay=0.0, max_grad_norm=1.0,
        report_to=[], save_strategy="no", eval_strategy="no", logging_steps=1, dataloader_num_workers=0,
        use_cpu=device == "cpu", bf16=device == "cuda", remove_unused_columns=False, seed=0, disable_tqdm=True,
        **{f"{name}{suffix}": value for suffix, value in (("", checkpointing), ("_kwargs", {"use_reentrant": False}))})
    tokenizer = pad_only_tokenizer()
    reset_memory(device)
    trainer = reference_trainer_class()(model=copy.deepcopy(base), args=arguments, train_dataset=dataset,
                                        data_collator=PairCollator(tokenizer), processing_class=tokenizer,
                                        callbacks=[clock])
    trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h and "step" in h]
    return {"marks": clock.marks, "losses": [h["loss"] for h in history], "optimizer": type(trainer.optimizer).__name__,
            "memory": {"peak_allocated_bytes": peak_memory(device)}}


def compare(size: str, spec: Size, steps: int, device: str, peak: dict, workdir: Path) -> list[dict]:
    """Both sides with gradient checkpointing off and on: one row each."""
    total_steps = steps + 2
    base = build_model(size, device)
    parameters = sum(p.numel() for p in base.parameters())
    groups = random_groups(spec, total_steps)
    step_tokens = [2 * spec.batch * spec.length] * total_steps
    tolerance = BF16_LOSS_TOLERANCE if device == "cuda" else LOSS_TOLERANCE
    rows = []
    for checkpointing in (False, True):
        with quiet_output(workdir / "console"):  # progress bars and HF's log lines
            runs = {"lethe": run_lethe(base, groups, spec, total_steps, checkpointing, device),
                    "reference": run_reference(base, groups, spec, total_steps, checkpointing, device, workdir)}
        row = {"model": size, "parameters": parameters, "gradient_checkpointing": checkpointing,
               "batch": f"{spec.batch}+{spec.batch} x {spec.length}"}
        for side, run in runs.items():
            timed = window(run, steps, step_tokens)
            flops = timed["tokens_per_s"] * 6 * parameters
            row[side] = {"tokens_per_s": timed["tokens_per_s"], "step_s_median": timed["step_s_median"],
                         "mfu": flops / (peak["gflops"] * 1e9), "memory": run["memory"],
                         "losses": run["losses"][:LOSS_CHECK_STEPS]}
        row["ratio"] = row["lethe"]["tokens_per_s"] / row["reference"]["tokens_per_s"]
        difference = max(abs(a - b) for a, b in zip(row["lethe"]["losses"], row["reference"]["losses"], strict=True))
        row["parity"] = {"max_abs_diff": difference, "tolerance": tolerance, "passed": difference <= tolerance}
        print(f"  {size} checkpointing={'on' if checkpointing else 'off'}: Lethe {row['lethe']['tokens_per_s']:,.0f} "
              f"tok/s, reference {row['reference']['tokens_per_s']:,.0f} tok/s ({row['ratio']:.2f}x), "
              f"first losses |diff| {difference:.1e}", flush=True)
        rows.append(row)
    return rows


FSDP_CONFIG = ROOT / "configs" / "accelerate" / "fsdp.yaml"


def fsdp_smoke(size: str, workdir: Path, device: str, accelerate_config: Path = FSDP_CONFIG) -> dict:
    """bench/fsdp_smoke.py under `accelerate launch` with `accelerate_config` (one process) and alone; both saved
    models, and the untrained one, scored on the same held-out tokens."""
    from transformers import AutoModelForCausalLM

    from lethe.scoring import score_chunks

    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    script = str(ROOT / "bench" / "fsdp_smoke.py")
    with socket.socket() as probe:  # a free port: torchrun's default may be taken
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
                "--num_processes", "1", "--main_process_port", str(port)]
    runs = {}
    for name, prefix in (("launched", launcher), ("single", [sys.executable])):
        out = workdir / name
        done = subprocess.run([*prefix, script, "--size", size, "--out", str(out)], capture_output=True, text=True,
                              env=env, timeout=600)
        if done.returncode != 0:  # the worker's own error, not torchrun's summary after it
            errors = [line for line in done.stderr.splitlines() if "Error: " in line]
            return {"ran": False, "failed": name, "reason": errors[0] if errors else f"exit status {done.returncode}"}
        runs[name] = json.loads((out / "smoke.json").read_text())
    held_out = random_groups(SIZES[size], 1, seed=1)["forget"]
    models = {name: AutoModelForCausalLM.from_pretrained(workdir / name / "model").to(device) for name in runs}
    models["untrained"] = build_model(size, device)
    losses = {name: math.log(score_chunks(model, held_out, pad_id=0, progress=False).perplexity())
              for name, model in models.items()}
    weights = {name: model.state_dict() for name, model in models.items()}

    def largest_difference(a: str, b: str) -> float:
        return max((weights[a][key] - weights[b][key]).abs().max().item() for key in weights[a])

    difference, change = largest_difference("launched", "single"), largest_difference("single", "untrained")
    return {"ran": True, "config": accelerate_config.name, "launched": runs["launched"], "single": runs["single"],
            "held_out_loss": losses, "weights": {"largest_difference": difference, "largest_change": change},
            "same": abs(losses["launched"] - losses["single"]) <= 1e-3 and difference <= 1e-3 * change}


def markdown(result: dict) -> str:
    machine = result["machine"]
    lines = [f"# GPU benchmark ({result['device']})", "",
             f"`{result['command']}`: {machine.get('gpu', machine['cpu'])}, torch {machine['torch']}, "
             f"transformers {machine['transformers']}, accelerate {machine['accelerate']}; matmul peak "
             f"{result['matmul_peak']['gflops']:,.0f} GFLOP/s ({result['matmul_peak'].get('dtype', 'float32')})", "",
             "| model | checkpointing | batch | Lethe tok/s | reference tok/s | ratio | MFU Lethe / ref | peak memory "
             "Lethe / ref (GiB) | Lethe estimate (GiB) | parity |", "|---|---|---|---:|---:|---:|---|---|---:|---|"]
    gib = 1024 ** 3
    for row in result["rows"]:
        lethe, reference = row["lethe"], row["reference"]
        peaks = " / ".join("–" if side["memory"]["peak_allocated_bytes"] is None
                           else f"{side['memory']['peak_allocated_bytes'] / gib:.1f}" for side in (lethe, reference))
        checkpointing = "on" if row["gradient_checkpointing"] else "off"
        lines.append(f"| {row['model']} ({row['parameters'] / 1e6:,.1f}M) | {checkpointing} | {row['batch']} | "
                     f"{lethe['tokens_per_s']:,.0f} | {reference['tokens_per_s']:,.0f} | "
                     f"{row['ratio']:.2f}× | {lethe['mfu']:.1%} / {reference['mfu']:.1%} | {peaks} | "
                     f"{lethe['memory']['estimate_bytes'] / gib:.2f} | "
                     f"{'passed' if row['parity']['passed'] else 'FAILED'} ({row['parity']['max_abs_diff']:.1e}) |")
    smoke = result["fsdp_smoke"]
    lines += ["", "FSDP smoke test (`accelerate launch`, configs/accelerate/fsdp.yaml, one process): " + (
        f"{smoke['launched']['distributed_type']}, sharded weights: {smoke['launched']['sharded']}, held-out loss "
        f"{smoke['held_out_loss']['launched']:.4f} vs {smoke['held_out_loss']['single']:.4f} without "
        f"`accelerate launch`, weights within {smoke['weights']['largest_difference']:.1e} of each other after moving "
        f"up to {smoke['weights']['largest_change']:.1e} ({'same' if smoke['same'] else 'DIFFERENT'})"
        if smoke["ran"] else
        f"did not run ({smoke['failed']}): {smoke['reason']}")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a 2-block model, 3 timed steps: the pipeline on a CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 20; --small: 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu")
    args = parser.parse_args(argv)
    quiet_libraries()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.small:
        raise SystemExit("no GPU: run with --small for the CPU check of the pipeline")
    sizes = ["small"] if args.small else ["135m", "1b"]
    steps = args.steps or (3 if args.small else 20)
    machine = machine_info() | ({"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda}
                                if device == "cuda" else {})
    peak = bf16_matmul_peak() if device == "cuda" else matmul_peak_gflops(n=512, tries=3) | {"dtype": "float32"}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lethe-gpu-bench-") as tmp:
        rows = [row for size in sizes for row in compare(size, SIZES[size], steps, device, peak, Path(tmp))]
        smoke = fsdp_smoke(sizes[0], Path(tmp) / "fsdp", device)
    result = {"benchmark": "gpu", "command": command_line(__file__, argv), "device": device, "machine": machine,
              "matmul_peak": peak, "steps": steps, "rows": rows, "fsdp_smoke": smoke,
              "seconds": time.perf_counter() - started}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "gpu.md").write_text(markdown(result))
    print(f"\n{markdown(result)}\nwrote {args.out / 'gpu.json'} and gpu.md ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
