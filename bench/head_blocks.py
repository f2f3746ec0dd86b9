#!/usr/bin/env python
"""Rows per block of the fused head at a large vocabulary: today's rule (at least MIN_HEAD_BLOCK_ROWS) against the
cache-sized blocks it replaced, and the plain unfused head, side by side on one head shape.

Both places that make logits one block of rows at a time are timed: the training loss with every gradient
(lethe.engine.losses.LinearCrossEntropySum, forward and backward over `--tokens` positions) and the scoring
reduction (per chunk, the head's logits and lethe.scoring._position_stats over `--chunk-length` − 1 positions), on
the model's own head weight (SmolLM2-135M's by default: 49,152 × 576) and random hidden states and targets. Parity:
the sides' losses agree to 1e-5 relative, every gradient to 1e-4 relative and every per-position score to 1e-4.

Usage:
    python bench/head_blocks.py                                # SmolLM2's head, bench/results/head_blocks.json
    python bench/head_blocks.py --model tiny --out /tmp/h.json # tiny's 8,192 rows: both rules give 128 rows
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
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
from lethe.engine import losses  # noqa: E402
from lethe.scoring import _position_stats  # noqa: E402


def cache_sized_rows(vocab: int) -> int:
    """The rule before MIN_HEAD_BLOCK_ROWS: as many rows as fit ROW_BLOCK_FLOATS."""
    return max(1, losses.ROW_BLOCK_FLOATS // vocab)


def fused_loss(hidden, weight, targets, rows: int):
    """LinearCrossEntropySum with `rows` per block: (loss, grad hidden, grad weight)."""
    saved = losses.MIN_HEAD_BLOCK_ROWS, losses.ROW_BLOCK_FLOATS
    losses.MIN_HEAD_BLOCK_ROWS, losses.ROW_BLOCK_FLOATS = rows, rows * weight.shape[0]
    try:
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss = losses.LinearCrossEntropySum.apply(h, w, None, targets)
        loss.backward()
    finally:
        losses.MIN_HEAD_BLOCK_ROWS, losses.ROW_BLOCK_FLOATS = saved
    return loss.detach(), h.grad, w.grad


def unfused_loss(hidden, weight, targets):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = F.cross_entropy(F.linear(h, w), targets, reduction="sum")
    loss.backward()
    return loss.detach(), h.grad, w.grad


@torch.no_grad()
def score_reduction(hidden, weight, targets, rows: int) -> torch.Tensor:
    """scoring.score_chunks' reduction with `rows` per block: per chunk, per block of positions, the head's logits
    and each position's log p(target), vocabulary mean and variance, top-1 hit."""
    out = []
    for chunk, chunk_targets in zip(hidden, targets, strict=True):
        for start in range(0, chunk.shape[0], rows):
            block = F.linear(chunk[start:start + rows], weight)
            out.append(torch.stack([s.float() for s in _position_stats(block, chunk_targets[start:start + rows])]))
    return torch.cat(out, dim=1)


@torch.no_grad()
def unfused_scores(hidden, weight, targets) -> torch.Tensor:
    """The model's own logits for every chunk at once, then the same per-position statistics."""
    logits = F.linear(hidden, weight)
    return torch.cat([torch.stack([s.float() for s in _position_stats(rows, row_targets)])
                      for rows, row_targets in zip(logits, targets, strict=True)], dim=1)


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def measure(args: argparse.Namespace, command: str, peak: dict | None = None) -> dict:
    quiet_libraries()
    model, _, described = load_bench_model(args.model)
    weight = model.get_output_embeddings().weight.detach().float().clone()
    del model
    (vocab, hidden), generator = weight.shape, torch.Generator().manual_seed(args.seed)
    train_hidden = torch.randn(args.tokens, hidden, generator=generator)
    train_targets = torch.randint(0, vocab, (args.tokens,), generator=generator)
    chunks = args.tokens // args.chunk_length
    score_hidden = torch.randn(chunks, args.chunk_length - 1, hidden, generator=generator)
    score_targets = torch.randint(0, vocab, (chunks, args.chunk_length - 1), generator=generator)
    rows = {"block_rule": losses.head_block_rows(vocab), "cache_sized": cache_sized_rows(vocab)}
    outputs: dict[str, dict] = {}

    def side(name: str):
        def run() -> dict:
            if name == "unfused":
                loss_s, loss = timed(lambda: unfused_loss(train_hidden, weight, train_targets))
                score_s, scores = timed(lambda: unfused_scores(score_hidden, weight, score_targets))
            else:
                loss_s, loss = timed(lambda: fused_loss(train_hidden, weight, train_targets, rows[name]))
                score_s, scores = timed(lambda: score_reduction(score_hidden, weight, score_targets, rows[name]))
            outputs[name] = {"loss": loss, "scores": scores}
            return {"loss_s": loss_s, "score_s": score_s, "summary": f"loss {loss_s:.3f} s, scoring {score_s:.3f} s"}
        return run

    measured = interleaved_repeats({name: side(name) for name in ("block_rule", "cache_sized", "unfused")},
                                   args.repeats, busy_threshold=args.busy_threshold)
    medians = {name: {key: statistics.median(m[key] for m in runs) for key in ("loss_s", "score_s")}
               for name, runs in measured["sides"].items()}
    want = outputs["unfused"]
    parity = {}
    for name in ("block_rule", "cache_sized"):
        got = outputs[name]
        (loss, *grads), (want_loss, *want_grads) = got["loss"], want["loss"]
        parity[name] = {"loss_rel": float(abs(loss - want_loss) / abs(want_loss)),
                        "grad_rel": max(float((g - w).abs().max() / w.abs().max())
                                        for g, w in zip(grads, want_grads, strict=True)),
                        "scores_abs": float(torch.nan_to_num(got["scores"] - want["scores"]).abs().max())}
    passed = all(p["loss_rel"] < 1e-5 and p["grad_rel"] < 1e-4 and p["scores_abs"] < 1e-4 for p in parity.values())
    ratio = {key: medians["cache_sized"][key] / medians["block_rule"][key] for key in ("loss_s", "score_s")}
    peak = peak or matmul_peak_gflops()
    flops = {"loss_s": 6 * vocab * hidden * args.tokens, "score_s": 2 * vocab * hidden * score_targets.numel()}
    utilisation = {name: {key: flops[key] / seconds / (peak["gflops"] * 1e9) for key, seconds in side.items()}
                   for name, side in medians.items()}
    return {"command": command, "machine": machine_info(), "matmul_peak": peak, "flop_utilisation": utilisation,
            "model": described, "head": {"vocab": vocab, "hidden": hidden}, "tokens": args.tokens,
            "chunk_length": args.chunk_length, "rows": rows, "medians": medians,
            "speedup_over_cache_sized": ratio, "parity": parity, "passed": passed, "load": measured["load"],
            "repeats": measured["sides"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shared_arguments(parser, default_model="smollm2")
    parser.add_argument("--tokens", type=int, default=512, help="positions per loss (the demo's step: 4 × 128)")
    parser.add_argument("--chunk-length", type=int, default=128, help="tokens per scored chunk")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "head_blocks.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = measure(args, command_line(__file__, argv))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    m, rows = result["medians"], result["rows"]
    head = result["head"]
    print(f"head {head['vocab']} × {head['hidden']} ({result['model']}), {args.tokens} tokens: rows per block "
          f"{rows['block_rule']} (rule) vs {rows['cache_sized']} (cache-sized)\n"
          f"  loss + gradients: {m['block_rule']['loss_s']:.3f} s vs {m['cache_sized']['loss_s']:.3f} s "
          f"({result['speedup_over_cache_sized']['loss_s']:.2f}x); unfused {m['unfused']['loss_s']:.3f} s\n"
          f"  scoring reduction: {m['block_rule']['score_s']:.3f} s vs {m['cache_sized']['score_s']:.3f} s "
          f"({result['speedup_over_cache_sized']['score_s']:.2f}x); unfused {m['unfused']['score_s']:.3f} s\n"
          f"  parity {'passed' if result['passed'] else 'FAILED'}: {result['parity']}")
    return result


if __name__ == "__main__":
    main()
