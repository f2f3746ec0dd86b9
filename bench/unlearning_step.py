#!/usr/bin/env python
"""Unlearning-step throughput: Lethe's training engine vs a Hugging Face `Trainer` reference.

The reference is built the way OpenUnlearning's `GradDiff` (and the HF-Trainer-based code of
Yao et al.) does it: a `transformers.Trainer` subclass whose `compute_loss` calls the model twice,
on the forget batch and on the retain batch, with `labels=`, and returns
    loss = -CE(forget) + CE(retain)
over a dataset of forget/retain pairs (one retain example per forget example), padded by a
collator that calls `tokenizer.pad`. Lethe's side is `lethe.engine.trainer.Trainer` running the
registered `ga_gd_in` method, which is the same objective.

Both sides get the same model weights, the same chunks in the same order (the reference uses a
sequential sampler over pairs laid out in the order Lethe's seeded streams deal them, as Yao et
al.'s trainer uses a SequentialSampler), the same batch size, optimiser (AdamW), learning-rate
schedule (cosine, 3% warm-up), clipping (1.0) and number of optimiser steps. Each repeat runs the
two sides one after the other in this process, alternating which goes first.

Timing: each side runs `steps + 2` optimiser steps. The clock is read at the start of every
step's loss computation (Lethe: a pass-through wrapper around the objective; reference: a
`TrainerCallback.on_step_begin`, called at the same point of HF's loop, after the batch is
fetched). The timed window runs from the start of step 2 to the start of step `steps + 2`, so it
covers exactly `steps` whole steps (forward, backward, clipping, optimiser, scheduler, logging,
fetching the next batch) and leaves out step 1 (warm-up, lazy initialisation) and all set-up and
tear-down. Tokens are real (unpadded) tokens of both the forget and the retain batch, as Lethe
counts them; FLOPs per token are taken as 6·N (N = unique parameters).

Usage:
    python bench/unlearning_step.py --model tiny --steps 30 --batch-size 8 --chunk-length 128 \
        --repeats 3 --out bench/results/unlearning_step.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

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
    profile_to_file,
    quiet_libraries,
)

SPLITS = ("code/forget", "code/retain")
LOSS_CHECK_STEPS = 5
LOSS_TOLERANCE = 1e-3  # absolute, per step, on the total loss of the first LOSS_CHECK_STEPS steps
# extra Lethe sides: side name → (command-line flag, key of the record, run_lethe options)
VARIANTS = {"lethe_compiled": ("compiled", "compiled", {"compile_model": True}),
            "lethe_logits": ("logits_head", "logits_head", {"fused_head": False})}


# -- model and data -----------------------------------------------------------------------------------

def load_chunks(tokenizer, context: int, length: int, batch_size: int, data_dir: Path):
    """code/forget and code/retain chunks, each cut to a whole number of batches (so every batch on
    both sides is full and the two sides' batches coincide exactly)."""
    from lethe.config import ChunkConfig
    from lethe.data.chunking import chunk_documents
    from lethe.data.splits import load_splits

    documents = load_splits(data_dir, list(SPLITS))
    groups = {}
    for role, split in zip(("forget", "retain"), SPLITS, strict=True):
        chunks = chunk_documents(documents[split], tokenizer, ChunkConfig(length=length), context)
        keep = len(chunks) - len(chunks) % batch_size
        if keep == 0:
            raise SystemExit(f"{split} has {len(chunks)} chunks, fewer than one batch of {batch_size}")
        groups[role] = chunks[:keep]
    return groups


def lethe_order(groups, batch_size: int, seed: int, steps: int) -> dict[str, list[list[int]]]:
    """Per step, the chunk indices Lethe's GroupStreams deal (forget: seed, retain: seed + 1)."""
    from lethe.engine.trainer import GroupStream

    order = {}
    for i, (name, chunks) in enumerate(groups.items()):
        stream = GroupStream(name, chunks, batch_size, seed + i, 0, 1, pad_id=0)
        batches, epoch = [], 0
        while len(batches) < steps:
            shard = stream._shard(epoch)
            batches += [shard[b * batch_size:(b + 1) * batch_size] for b in range(stream.batches_per_epoch)]
            epoch += 1
        order[name] = batches[:steps]
    return order


# -- the reference: HF Trainer, GradDiff-style --------------------------------------------------------

class ForgetRetainPairs(torch.utils.data.Dataset):
    """One retain example per forget example (Yao et al.: positive_ratio=1; OpenUnlearning: ForgetRetainDataset)."""

    def __init__(self, forget: list[dict], retain: list[dict]) -> None:
        assert len(forget) == len(retain)
        self.forget, self.retain = forget, retain

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, index: int) -> dict:
        return {"forget": self.forget[index], "retain": self.retain[index]}


class PairCollator:
    """Pads each half with the tokenizer; labels are the input ids with -100 on padding."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict]) -> dict:
        batch = {}
        for key in ("forget", "retain"):
            padded = self.tokenizer.pad([f[key] for f in features], padding=True, return_tensors="pt")
            labels = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, -100)
            batch[key] = {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"],
                          "labels": labels}
        return batch


def reference_trainer_class():
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class GradDiffTrainer(Trainer):
        """OpenUnlearning's GradDiff (retain_loss_type=NLL): gamma·(−NLL_forget) + alpha·NLL_retain."""

        def __init__(self, *args, gamma: float = 1.0, alpha: float = 1.0, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.gamma, self.alpha = gamma, alpha

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            forget_inputs = inputs["forget"]
            forget_inputs = {"input_ids": forget_inputs["input_ids"],
                             "attention_mask": forget_inputs["attention_mask"],
                             "labels": forget_inputs["labels"]}
            forget_outputs = model(**forget_inputs)
            forget_loss = -forget_outputs.loss
            retain_inputs = inputs["retain"]
            retain_inputs = {"input_ids": retain_inputs["input_ids"],
                             "attention_mask": retain_inputs["attention_mask"],
                             "labels": retain_inputs["labels"]}
            retain_loss = model(**retain_inputs).loss
            loss = self.gamma * forget_loss + self.alpha * retain_loss
            return (loss, forget_outputs) if return_outputs else loss

        def _get_train_sampler(self, train_dataset=None):
            # Yao et al.'s trainers read their (pre-interleaved) dataset in order
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    return GradDiffTrainer


def run_reference(base, tokenizer, dataset, args, total_steps: int, workdir: Path) -> dict:
    from transformers import TrainerCallback, TrainingArguments

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    clock = StepClock()
    training_args = TrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=args.batch_size, max_steps=total_steps,
        learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=0.03,  # transformers 5: a float < 1
        weight_decay=0.0, max_grad_norm=1.0, gradient_accumulation_steps=1,  # is a ratio (was warmup_ratio)
        report_to=[], save_strategy="no", eval_strategy="no", logging_steps=1, logging_strategy="steps",
        dataloader_num_workers=0, use_cpu=True, remove_unused_columns=False, seed=args.seed,
    )
    trainer = reference_trainer_class()(
        model=copy.deepcopy(base), args=training_args, train_dataset=dataset,
        data_collator=PairCollator(tokenizer), processing_class=tokenizer, callbacks=[clock])
    t0 = time.perf_counter()
    trainer.train()
    t1 = time.perf_counter()
    history = [h for h in trainer.state.log_history if "loss" in h and "step" in h]
    return {"marks": clock.marks, "end": t1, "start": t0, "optimizer": type(trainer.optimizer).__name__,
            "optim": str(training_args.optim),
            "losses": [h["loss"] for h in history], "grad_norms": [h.get("grad_norm") for h in history]}


# -- Lethe ----------------------------------------------------------------------------------------------

class TimedObjective:
    """Pass-through wrapper: notes the clock when each step's loss computation starts."""

    def __init__(self, objective) -> None:
        self.objective, self.groups = objective, objective.groups
        self.marks: list[float] = []

    def __call__(self, model, batches):
        self.marks.append(time.perf_counter())
        return self.objective(model, batches)


def run_lethe(base, tokenizer, reference_model, groups, args, total_steps: int, compile_model: bool = False,
              fused_head: bool = True) -> dict:
    from lethe.config import MethodArgs, TrainConfig
    from lethe.engine.trainer import Trainer
    from lethe.unlearning.methods import MethodContext, methods

    context = MethodContext(reference=reference_model, special_ids=tokenizer.all_special_ids,
                            vocab_size=len(tokenizer))
    objective = TimedObjective(methods.get("ga_gd_in")(context, MethodArgs()))
    config = TrainConfig(epochs=10_000, max_steps=total_steps, batch_size=args.batch_size, lr=args.lr,
                         warmup_ratio=0.03, scheduler="cosine", max_grad_norm=1.0, seed=args.seed, log_every=1,
                         compile=compile_model, fused_head=fused_head)
    trainer = Trainer(copy.deepcopy(base), objective, groups, config, pad_id=tokenizer.pad_token_id,
                      batch_sizes={"retain": args.batch_size}, desc="bench")
    t0 = time.perf_counter()
    result = trainer.fit()
    t1 = time.perf_counter()
    history = [h for h in result.history if "loss" in h]
    return {"marks": objective.marks, "end": t1, "start": t0, "fit": {"steps": result.steps, "tokens": result.tokens,
                                                                     "seconds": result.seconds},
            "optimizer": type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer")
                              else trainer.optimizer).__name__,
            "losses": [h["loss"] for h in history], "grad_norms": [h.get("grad_norm") for h in history]}


# -- checks, profile ------------------------------------------------------------------------------------

def check_same_batches(groups, dataset, tokenizer, pad_id: int, batch_size: int, seed: int, steps: int = 3) -> None:
    """Lethe's first batches (from its own GroupStreams) == the reference collator's first batches."""
    from lethe.engine.trainer import GroupStream

    collator = PairCollator(tokenizer)
    streams = {name: GroupStream(name, chunks, batch_size, seed + i, 0, 1, pad_id).batches(0)
               for i, (name, chunks) in enumerate(groups.items())}
    for step in range(steps):
        ref = collator([dataset[step * batch_size + j] for j in range(batch_size)])
        for name, stream in streams.items():
            ours = next(stream)
            for key in ("input_ids", "attention_mask", "labels"):
                if not torch.equal(ours[key], ref[name][key]):
                    raise SystemExit(f"batch mismatch at step {step + 1}, group {name}, {key}: the two sides "
                                     "would not train on the same data")


def window(run: dict, steps: int, step_tokens: list[int]) -> dict:
    """Tokens/s from the start of step 2 to the start of step steps+2: `steps` whole steps."""
    marks = run["marks"]
    if len(marks) < steps + 2:
        raise SystemExit(f"expected {steps + 2} step marks, got {len(marks)}")
    seconds = marks[steps + 1] - marks[1]
    step_times = [b - a for a, b in zip(marks[1:steps + 1], marks[2:steps + 2], strict=True)]
    tokens_per_s = sum(step_tokens[1:steps + 1]) / seconds
    return {"tokens_per_s": tokens_per_s, "step_s_median": statistics.median(step_times),
            "first_step_s": marks[1] - marks[0], "losses": run["losses"], "optimizer": run["optimizer"],
            "summary": f"{tokens_per_s:8.1f} tok/s (median step {statistics.median(step_times) * 1e3:.0f} ms)"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_shared_arguments(parser, default_model="tiny")
    parser.add_argument("--steps", type=int, default=30, help="timed optimiser steps per side and repeat")
    parser.add_argument("--batch-size", type=int, default=8, help="forget chunks (and retain chunks) per step")
    parser.add_argument("--chunk-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "unlearning_step.json")
    parser.add_argument("--profile", action="store_true", help="also profile one run of each side")
    parser.add_argument("--compiled", action="store_true",
                        help="a side more: Lethe with train.compile (compilation falls in the untimed first step)")
    parser.add_argument("--logits-head", action="store_true",
                        help="a side more: Lethe with train.fused_head off (the model's logits, as before issue 16)")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, command: str, peak: dict | None = None) -> dict:
    """The benchmark's record (nothing written but the optional profile tables); `peak`: a matmul peak
    measured earlier in the same run, else measured here."""
    quiet_libraries()
    from lethe.config import default_data_dir
    from lethe.models import count_parameters, model_context

    base, tokenizer, model_desc = load_bench_model(args.model)
    base.requires_grad_(True)
    params = count_parameters(base)
    reference_model = copy.deepcopy(base).requires_grad_(False).eval()  # the frozen original (MethodContext)
    total_steps = args.steps + 2
    groups = load_chunks(tokenizer, model_context(base), args.chunk_length, args.batch_size,
                         args.data or default_data_dir())
    order = lethe_order(groups, args.batch_size, args.seed, total_steps)
    step_tokens = [sum(len(groups[g][i]) for g in groups for i in order[g][s]) for s in range(total_steps)]

    def item(chunk) -> dict:
        return {"input_ids": list(chunk.input_ids), "attention_mask": [1] * len(chunk)}

    ref_tokenizer = copy.deepcopy(tokenizer)
    ref_tokenizer.padding_side = "right"  # as Yao et al. load it; Lethe pads on the right too
    dataset = ForgetRetainPairs([item(groups["forget"][i]) for s in order["forget"] for i in s],
                                [item(groups["retain"][i]) for s in order["retain"] for i in s])
    check_same_batches(groups, dataset, ref_tokenizer, tokenizer.pad_token_id, args.batch_size, args.seed)
    print(f"model: {model_desc}; {params / 1e6:.2f}M parameters; {total_steps} steps per run ({args.steps} timed), "
          f"batch {args.batch_size}+{args.batch_size} x {args.chunk_length}", flush=True)
    peak = peak or matmul_peak_gflops()

    with tempfile.TemporaryDirectory(prefix="lethe-bench-") as tmp:
        workdir = Path(tmp)
        runners = {"lethe": lambda: run_lethe(base, tokenizer, reference_model, groups, args, total_steps),
                   "reference": lambda: run_reference(base, ref_tokenizer, dataset, args, total_steps, workdir)}
        for side, (flag, _, options) in VARIANTS.items():
            if getattr(args, flag):
                runners[side] = lambda options=options: run_lethe(base, tokenizer, reference_model, groups, args,
                                                                  total_steps, **options)
        measured = interleaved_repeats({name: (lambda fn=fn: window(fn(), args.steps, step_tokens))
                                        for name, fn in runners.items()}, args.repeats,
                                       busy_threshold=args.busy_threshold, console=workdir / "console")
        profile = {name: profile_to_file(f"{name}: {total_steps} steps", fn,
                                         args.out.with_name(f"{args.out.stem}_profile_{name}.txt"), workdir / "console")
                   for name, fn in runners.items()} if args.profile else None

    flops_per_token = 6 * params
    summary = {}
    for side, runs in measured["sides"].items():
        tps = statistics.median(m["tokens_per_s"] for m in runs)
        summary[side] = {"tokens_per_s_median": tps, "tokens_per_s": [m["tokens_per_s"] for m in runs],
                         "gflops": tps * flops_per_token / 1e9,
                         "flop_utilisation": tps * flops_per_token / (peak["gflops"] * 1e9),
                         "step_s_median": statistics.median(m["step_s_median"] for m in runs),
                         "optimizer": runs[0]["optimizer"]}
    ratio = summary["lethe"]["tokens_per_s_median"] / summary["reference"]["tokens_per_s_median"]
    ours, theirs = (measured["sides"][side][0]["losses"][:LOSS_CHECK_STEPS] for side in ("lethe", "reference"))
    max_diff = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    variants = {key: None for _, key, _ in VARIANTS.values()}
    reference_tps = summary["reference"]["tokens_per_s_median"]
    for side, (_, key, _) in VARIANTS.items():
        if side in summary:
            losses = measured["sides"][side][0]["losses"][:LOSS_CHECK_STEPS]
            diff = max(abs(a - b) for a, b in zip(losses, theirs, strict=True))
            variants[key] = {**summary[side], "first_step_s": measured["sides"][side][0]["first_step_s"],
                             "ratio": summary[side]["tokens_per_s_median"] / reference_tps,
                             "loss_check": {"losses": losses, "max_abs_diff": diff, "passed": diff <= LOSS_TOLERANCE}}
    return {
        "benchmark": "unlearning_step", "command": command, "machine": machine_info(), "load": measured["load"],
        "model": {"name": args.model, "source": model_desc, "parameters": params, "flops_per_token": flops_per_token},
        "setup": {"method": "ga_gd_in (loss = -CE(forget) + CE(retain))", "splits": list(SPLITS),
                  "batch_size": args.batch_size, "chunk_length": args.chunk_length, "timed_steps": args.steps,
                  "repeats": args.repeats, "lr": args.lr, "scheduler": "cosine, warm-up 3%", "max_grad_norm": 1.0},
        "matmul_peak": peak, "lethe": summary["lethe"], "reference": summary["reference"],
        "ratio": ratio, "target_ratio": 1.2, "reached_target": ratio >= 1.2,
        "loss_check": {"steps": len(ours), "tolerance_abs": LOSS_TOLERANCE, "lethe": ours, "reference": theirs,
                       "max_abs_diff": max_diff, "passed": max_diff <= LOSS_TOLERANCE},
        "profile": profile, **variants,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = measure(args, command_line(__file__, argv))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    check = result["loss_check"]
    print(f"\n{markdown_table(result)}\n\nloss check (first {check['steps']} steps): "
          f"{'passed' if check['passed'] else 'FAILED'}, max |Δ| = {check['max_abs_diff']:.2e}\nwrote {args.out}")
    return result


def markdown_table(result: dict) -> str:
    rows = ["| side | tokens/s (median of repeats) | per repeat | median step | GFLOP/s (6N) | FLOP utilisation |",
            "|---|---:|---|---:|---:|---:|"]
    sides = [("Lethe `Trainer` (ga_gd_in)", result["lethe"]),
             ("HF `Trainer` + GradDiff `compute_loss`", result["reference"])]
    for key, name in (("logits_head", "Lethe `Trainer`, train.fused_head off"),
                      ("compiled", "Lethe `Trainer`, train.compile")):
        if result.get(key) is not None:
            sides.insert(1, (name, result[key]))
    for name, side in sides:
        rows.append(f"| {name} | {side['tokens_per_s_median']:.1f} | "
                    f"{', '.join(f'{x:.0f}' for x in side['tokens_per_s'])} | {side['step_s_median'] * 1e3:.0f} ms | "
                    f"{side['gflops']:.1f} | {side['flop_utilisation'] * 100:.1f}% |")
    rows.append(f"| **ratio Lethe ÷ reference** | **{result['ratio']:.2f}×** | | | | |")
    rows.append(f"\nfp32 matmul peak: {result['matmul_peak']['gflops']:.1f} GFLOP/s (torch.mm 2048³); "
                f"model {result['model']['parameters'] / 1e6:.2f}M parameters; {result['machine']['cpu']}, "
                f"{result['machine']['torch_threads']} threads")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
