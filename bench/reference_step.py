#!/usr/bin/env python
"""Unlearning steps of the methods that need the frozen original model (NPO, adversarial): Lethe, which
computes that reference work once per example, vs the same method recomputing it every step, vs a Hugging
Face `Trainer` subclass whose `compute_loss` forwards the reference model every step (OpenUnlearning's NPO).

All three sides get the same weights, the same forget chunks in the same order (Lethe's seeded stream over
`--epochs` epochs of `--forget-batches` batches; the HF side reads that order sequentially), AdamW, a
constant learning rate and clipping at 1.0. The clock is read when each step's loss computation starts.
The timed window is the steady state: from the first step of epoch 2, when every example has been seen,
to the start of the last step; in epoch 1 Lethe does the same reference work as the per-step side. Over
a whole run of E epochs Lethe saves (E − 1)/E of the reference forwards: `run_tokens_per_s` is each side's
throughput over all steps, first-step set-up included.

Parity: Lethe's first-epoch losses equal the per-step side's bit for bit (the same computation on the
same batches), and the HF side's first losses agree within a tolerance.

Usage:
    python bench/reference_step.py --model tiny --batch-size 8 --chunk-length 128 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.common import (  # noqa: E402
    add_shared_arguments,
    command_line,
    interleaved_repeats,
    load_bench_model,
    machine_info,
    matmul_peak_gflops,
    quiet_libraries,
)
from bench.per_step_reference import PER_STEP  # noqa: E402
from bench.unlearning_step import TimedObjective, lethe_order, load_chunks  # noqa: E402

METHODS = ("npo", "adversarial")
HF_LOSS_TOLERANCE = 1e-4  # absolute, on each of the first epoch's losses


# -- the HF Trainer reference: the reference model forwarded inside compute_loss at every step --------------------

def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) summed next-token NLL, as OpenUnlearning's compute_batch_nll: shift, CE per token, sum per row."""
    shifted = logits[:, :-1].transpose(1, 2)
    return F.cross_entropy(shifted, labels[:, 1:], ignore_index=-100, reduction="none").sum(-1)


def hf_trainer_class(method: str):
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class ReferenceForwardTrainer(Trainer):
        def __init__(self, *args, ref_model, beta: float = 0.1, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.ref_model, self.beta = ref_model, beta

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
            outputs = model(input_ids=ids, attention_mask=mask)
            with torch.no_grad():
                ref_logits = self.ref_model(input_ids=ids, attention_mask=mask).logits
            if method == "npo":  # OpenUnlearning's NPO: −(2/β)·mean log σ(β·(NLL_θ − NLL_ref))
                ratio = sequence_nll(outputs.logits, labels) - sequence_nll(ref_logits, labels)
                loss = -2 / self.beta * F.logsigmoid(self.beta * ratio).mean()
            else:  # towards the original's best wrong token
                wrong = ref_logits[:, :-1].scatter(-1, ids[:, 1:, None], float("-inf")).argmax(-1)
                targets = wrong.masked_fill(labels[:, 1:] == -100, -100)
                loss = F.cross_entropy(outputs.logits[:, :-1].transpose(1, 2), targets, ignore_index=-100)
            return (loss, outputs) if return_outputs else loss

        def _get_train_sampler(self, train_dataset=None):
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    return ReferenceForwardTrainer


class ForgetCollator:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict]) -> dict:
        padded = self.tokenizer.pad(features, padding=True, return_tensors="pt")
        return {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"],
                "labels": padded["input_ids"].masked_fill(padded["attention_mask"] == 0, -100)}


def run_hf(method: str, base, tokenizer, dataset, args, total_steps: int, workdir: Path) -> dict:
    from transformers import TrainerCallback, TrainingArguments

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    clock = StepClock()
    training_args = TrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=args.batch_size, max_steps=total_steps,
        learning_rate=args.lr, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0,
        report_to=[], save_strategy="no", eval_strategy="no", logging_steps=1, dataloader_num_workers=0,
        use_cpu=True, remove_unused_columns=False, seed=args.seed)
    trainer = hf_trainer_class(method)(
        model=copy.deepcopy(base), args=training_args, train_dataset=dataset, data_collator=ForgetCollator(tokenizer),
        processing_class=tokenizer, callbacks=[clock], ref_model=copy.deepcopy(base).requires_grad_(False).eval())
    start = time.perf_counter()
    trainer.train()
    return {"marks": clock.marks, "start": start, "end": time.perf_counter(),
            "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}


# -- Lethe, cached and per-step -------------------------------------------------------------------------------------

def run_lethe(method_class, base, tokenizer, forget, args, total_steps: int) -> dict:
    from lethe.config import MethodArgs, TrainConfig
    from lethe.engine.trainer import Trainer
    from lethe.unlearning.methods import MethodContext

    context = MethodContext(reference=copy.deepcopy(base).requires_grad_(False).eval(),
                            special_ids=tokenizer.all_special_ids, vocab_size=len(tokenizer))
    method = method_class(context, MethodArgs())
    objective = TimedObjective(method)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_ratio=0.0,
                         scheduler="constant", max_grad_norm=1.0, seed=args.seed, log_every=1)
    trainer = Trainer(copy.deepcopy(base), objective, {"forget": forget}, config, pad_id=tokenizer.pad_token_id,
                      desc="bench")
    start = time.perf_counter()
    result = trainer.fit()
    if result.steps != total_steps:
        raise SystemExit(f"Lethe ran {result.steps} steps, expected {total_steps}")
    return {"marks": objective.marks, "start": start, "end": time.perf_counter(),
            "losses": [h["loss"] for h in result.history], "reference_tokens": method.reference_tokens}


def timed(run: dict, first_timed: int, step_tokens: list[int]) -> dict:
    """Steady state: steps first_timed+1 .. last-1 (1-based), from their loss computations' starts."""
    marks = run["marks"]
    seconds = marks[-1] - marks[first_timed]
    tokens_per_s = sum(step_tokens[first_timed:len(marks) - 1]) / seconds
    return {"tokens_per_s": tokens_per_s, "run_tokens_per_s": sum(step_tokens) / (run["end"] - run["start"]),
            "losses": run["losses"], "reference_tokens": run.get("reference_tokens"),
            "summary": f"{tokens_per_s:8.1f} tok/s steady, {sum(step_tokens) / (run['end'] - run['start']):8.1f} "
                       "over the run"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_shared_arguments(parser, default_model="tiny")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of npo, adversarial")
    parser.add_argument("--forget-batches", type=int, default=2, help="forget batches per epoch")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (≥ 3: the timed window is epoch 2 on)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chunk-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reference_step.json")
    args = parser.parse_args(argv)
    if args.epochs < 3:
        parser.error("--epochs must be at least 3")
    return args


def measure_method(method: str, base, tokenizer, forget, args, workdir: Path, flops_per_token: float,
                   peak: dict) -> dict:
    from lethe.unlearning.methods import methods

    batches, total_steps = args.forget_batches, args.forget_batches * args.epochs
    order = lethe_order({"forget": forget}, args.batch_size, args.seed, total_steps)["forget"]
    step_tokens = [sum(len(forget[i]) for i in step) for step in order]
    ref_tokenizer = copy.deepcopy(tokenizer)
    ref_tokenizer.padding_side = "right"
    dataset = [{"input_ids": list(forget[i].input_ids), "attention_mask": [1] * len(forget[i])}
               for step in order for i in step]
    runners = {"lethe": lambda: run_lethe(methods.get(method), base, tokenizer, forget, args, total_steps),
               "per_step": lambda: run_lethe(PER_STEP[method], base, tokenizer, forget, args, total_steps),
               "hf_trainer": lambda: run_hf(method, base, ref_tokenizer, dataset, args, total_steps, workdir)}
    measured = interleaved_repeats({name: (lambda fn=fn: timed(fn(), batches, step_tokens))
                                    for name, fn in runners.items()}, args.repeats,
                                   busy_threshold=args.busy_threshold, console=workdir / "console")
    sides = {}
    for name, runs in measured["sides"].items():
        tps = statistics.median(m["tokens_per_s"] for m in runs)
        sides[name] = {"tokens_per_s_median": tps, "tokens_per_s": [m["tokens_per_s"] for m in runs],
                       "run_tokens_per_s_median": statistics.median(m["run_tokens_per_s"] for m in runs),
                       "flop_utilisation": tps * flops_per_token / (peak["gflops"] * 1e9),
                       "reference_tokens": runs[0]["reference_tokens"]}
    first = {name: runs[0]["losses"][:batches] for name, runs in measured["sides"].items()}
    hf_diff = max(abs(a - b) for a, b in zip(first["lethe"], first["hf_trainer"], strict=True))
    return {"sides": sides, "load": measured["load"], "steps": total_steps, "timed_steps": total_steps - batches - 1,
            "speedup": {name: sides["lethe"]["tokens_per_s_median"] / sides[name]["tokens_per_s_median"]
                        for name in ("per_step", "hf_trainer")},
            "run_speedup_vs_per_step": sides["lethe"]["run_tokens_per_s_median"]
            / sides["per_step"]["run_tokens_per_s_median"],
            "loss_check": {"steps": batches, "lethe": first["lethe"], "per_step": first["per_step"],
                           "hf_trainer": first["hf_trainer"], "per_step_identical": first["lethe"] == first["per_step"],
                           "hf_tolerance_abs": HF_LOSS_TOLERANCE, "hf_max_abs_diff": hf_diff,
                           "passed": first["lethe"] == first["per_step"] and hf_diff <= HF_LOSS_TOLERANCE}}


def measure(args: argparse.Namespace, command: str, peak: dict | None = None) -> dict:
    quiet_libraries()
    from lethe.config import default_data_dir
    from lethe.models import count_parameters, model_context

    base, tokenizer, model_desc = load_bench_model(args.model)
    base.requires_grad_(True)
    params = count_parameters(base)
    chunks = load_chunks(tokenizer, model_context(base), args.chunk_length, args.batch_size,
                         args.data or default_data_dir())["forget"]
    forget = chunks[:args.forget_batches * args.batch_size]
    if len(forget) < args.forget_batches * args.batch_size:
        raise SystemExit(f"only {len(chunks)} forget chunks for {args.forget_batches} batches of {args.batch_size}")
    peak = peak or matmul_peak_gflops()
    print(f"model: {model_desc}; {params / 1e6:.2f}M parameters; {args.forget_batches} batches of {args.batch_size}"
          f" x {args.chunk_length} per epoch, {args.epochs} epochs", flush=True)
    with tempfile.TemporaryDirectory(prefix="lethe-bench-") as tmp:
        results = {method: measure_method(method, base, tokenizer, forget, args, Path(tmp), 6 * params, peak)
                   for method in args.methods.split(",")}
    return {"benchmark": "reference_step", "command": command, "machine": machine_info(), "matmul_peak": peak,
            "model": {"name": args.model, "source": model_desc, "parameters": params, "flops_per_token": 6 * params},
            "setup": {"forget_batches": args.forget_batches, "epochs": args.epochs, "batch_size": args.batch_size,
                      "chunk_length": args.chunk_length, "repeats": args.repeats, "lr": args.lr,
                      "scheduler": "constant", "max_grad_norm": 1.0},
            "methods": results, "target_ratio": 1.4,
            "reached_target": all(r["speedup"]["per_step"] >= 1.4 for r in results.values())}


def markdown_table(result: dict) -> str:
    rows = ["| method | Lethe (cached) tok/s | per-step reference | HF `Trainer` | × per-step | × HF | "
            "× per-step over the run | parity |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for method, r in result["methods"].items():
        sides, check = r["sides"], r["loss_check"]
        rows.append(f"| {method} | {sides['lethe']['tokens_per_s_median']:.0f} | "
                    f"{sides['per_step']['tokens_per_s_median']:.0f} | {sides['hf_trainer']['tokens_per_s_median']:.0f}"
                    f" | **{r['speedup']['per_step']:.2f}×** | {r['speedup']['hf_trainer']:.2f}× | "
                    f"{r['run_speedup_vs_per_step']:.2f}× | {'passed' if check['passed'] else 'FAILED'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = measure(args, command_line(__file__, argv))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{markdown_table(result)}\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
