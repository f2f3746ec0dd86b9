#!/usr/bin/env python
"""Extraction-attack generation: Lethe's batched, KV-cached `generate` vs one prompt at a time.

The reference is how MIMIR-style and most original attack code decode: a loop over prompts, each
one tokenized alone and passed to `model.generate` with its own attention mask. Lethe's side is
`lethe.attacks.extraction.generate_batched`, the path `lethe attack extract` runs: prompts sorted
by length, left-padded into batches, one `generate` call per batch with `use_cache=True`.

Both sides get the same model, the same prompts (real text from the data splits, cut at seeded
random lengths so batches need padding), greedy decoding and the same `max_new_tokens`; the
continuations (cut at EOS) must be identical token for token, or the run stops. Each repeat times
both sides one after the other, alternating which goes first; the median over repeats is reported.

Usage:
    python bench/generation.py --model smollm2 --prompts 64 --repeats 3
    python bench/generation.py --model tiny --prompts 16 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
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
    quiet_libraries,
)

SPLITS = ("general/eval", "books/approximate", "science/approximate")  # what `lethe data pii` builds on
TARGET_RATIO = 5.0


def make_prompts(tokenizer, data_dir: Path, count: int, shortest: int, longest: int, seed: int) -> list[list[int]]:
    """`count` windows of real text, each of a random length in [shortest, longest] tokens."""
    from lethe.data.splits import load_splits

    documents = [doc for docs in load_splits(data_dir, list(SPLITS)).values() for doc in docs]
    encoded = [ids for ids in tokenizer([d.text for d in documents], add_special_tokens=False)["input_ids"]
               if len(ids) > longest]
    rng = random.Random(seed)
    prompts = []
    for i in range(count):
        ids, length = encoded[i % len(encoded)], rng.randint(shortest, longest)
        start = rng.randrange(len(ids) - length)
        prompts.append(ids[start:start + length])
    return prompts


def cut_at_eos(tokens: list[int], eos_id: int | None) -> list[int]:
    return tokens[:tokens.index(eos_id)] if eos_id in tokens else tokens


@torch.no_grad()
def one_at_a_time(model, prompts, max_new_tokens: int, pad_id: int, eos_id: int | None) -> list[list[int]]:
    device = next(model.parameters()).device
    outputs = []
    for prompt in prompts:
        ids = torch.tensor([prompt], device=device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=eos_id)
        outputs.append(cut_at_eos(out[0, len(prompt):].tolist(), eos_id))
    return outputs


def batched(model, prompts, max_new_tokens: int, pad_id: int, eos_id: int | None, batch_size: int):
    from lethe.attacks.extraction import generate_batched, strategy_kwargs
    from lethe.config import DecodingConfig

    guesses = generate_batched(model, prompts, [max_new_tokens] * len(prompts), pad_id=pad_id, eos_id=eos_id,
                               kwargs=strategy_kwargs("greedy", DecodingConfig()), batch_size=batch_size)
    return [g[0] for g in guesses]


def timed(fn, prompts: list[list[int]]) -> dict:
    started = time.perf_counter()
    outputs = fn()
    seconds = time.perf_counter() - started
    new_tokens = sum(len(o) for o in outputs)
    return {"seconds": seconds, "prompts_per_s": len(prompts) / seconds, "new_tokens_per_s": new_tokens / seconds,
            "outputs": outputs, "summary": f"{seconds:7.2f} s ({new_tokens / seconds:8.1f} new tokens/s)"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_shared_arguments(parser, default_model="smollm2")
    parser.add_argument("--prompts", type=int, default=64)
    # defaults as in the training-data extraction benchmark: 50-token prefixes (here 40-60) and 50-token suffixes
    parser.add_argument("--shortest", type=int, default=40, help="fewest prompt tokens")
    parser.add_argument("--longest", type=int, default=60, help="most prompt tokens")
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per generate call (Lethe's default)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default: bench/results/generation[_smollm2].json)")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, command: str, peak: dict | None = None) -> dict:
    """The benchmark's record (nothing written); `peak`: a matmul peak measured earlier in the same run."""
    quiet_libraries()
    from lethe.config import default_data_dir
    from lethe.models import count_parameters

    model, tokenizer, source = load_bench_model(args.model)
    params = count_parameters(model)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    prompts = make_prompts(tokenizer, args.data or default_data_dir(), args.prompts, args.shortest, args.longest,
                           args.seed)
    print(f"model: {source}; {params / 1e6:.2f}M parameters; {len(prompts)} prompts of "
          f"{args.shortest}-{args.longest} tokens; greedy, {args.max_new_tokens} new tokens", flush=True)
    peak = peak or matmul_peak_gflops()
    sides = {"lethe": lambda: timed(lambda: batched(model, prompts, args.max_new_tokens, pad_id, eos_id,
                                                    args.batch_size), prompts),
             "reference": lambda: timed(lambda: one_at_a_time(model, prompts, args.max_new_tokens, pad_id, eos_id),
                                        prompts)}
    # one short untimed call per side first: lazy initialisation is not what is compared
    batched(model, prompts[:2], 4, pad_id, eos_id, 2)
    one_at_a_time(model, prompts[:2], 4, pad_id, eos_id)
    measured = interleaved_repeats(sides, args.repeats, busy_threshold=args.busy_threshold)

    mismatches = [i for i, (a, b) in enumerate(zip(*(measured["sides"][s][0]["outputs"] for s in sides),
                                                   strict=True)) if a != b]
    # useful work, the same for both sides: every prompt and generated token forwarded once (padding not counted)
    tokens = sum(len(p) for p in prompts) + sum(len(o) for o in measured["sides"]["reference"][0]["outputs"])
    flops_per_token = 2 * params
    summary = {}
    for side, runs in measured["sides"].items():
        seconds = statistics.median(m["seconds"] for m in runs)
        summary[side] = {"seconds_median": seconds, "seconds": [m["seconds"] for m in runs],
                         "new_tokens_per_s_median": statistics.median(m["new_tokens_per_s"] for m in runs),
                         "prompts_per_s_median": statistics.median(m["prompts_per_s"] for m in runs),
                         "gflops": tokens * flops_per_token / seconds / 1e9,
                         "flop_utilisation": tokens * flops_per_token / seconds / (peak["gflops"] * 1e9)}
    ratio = summary["reference"]["seconds_median"] / summary["lethe"]["seconds_median"]
    return {
        "benchmark": "generation", "command": command, "machine": machine_info(), "load": measured["load"],
        "model": {"name": args.model, "source": source, "parameters": params, "flops_per_token": flops_per_token},
        "setup": {"prompts": len(prompts), "prompt_tokens": [len(p) for p in prompts], "splits": list(SPLITS),
                  "decoding": "greedy", "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                  "repeats": args.repeats, "seed": args.seed, "tokens_forwarded": tokens},
        "matmul_peak": peak, "lethe": summary["lethe"], "reference": summary["reference"],
        "ratio": ratio, "target_ratio": TARGET_RATIO, "reached_target": ratio >= TARGET_RATIO,
        "identical_outputs": {"passed": not mismatches, "mismatched_prompts": mismatches},
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = args.out or ROOT / "bench" / "results" / f"generation{'_smollm2' if args.model == 'smollm2' else ''}.json"
    result = measure(args, command_line(__file__, argv))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    mismatches = result["identical_outputs"]["mismatched_prompts"]
    print(f"\n{markdown_table(result)}\n\noutputs identical token for token: "
          f"{'yes' if not mismatches else f'NO ({len(mismatches)} prompts differ: {mismatches[:10]})'}\nwrote {out}")
    if mismatches:
        raise SystemExit(1)
    return result


def markdown_table(result: dict) -> str:
    rows = ["| side | seconds (median) | per repeat | new tokens/s | prompts/s | FLOP utilisation (2N) |",
            "|---|---:|---|---:|---:|---:|"]
    for name, side in ((f"Lethe: batched `generate` (batch {result['setup']['batch_size']}, KV cache)",
                        result["lethe"]), ("one prompt at a time", result["reference"])):
        rows.append(f"| {name} | {side['seconds_median']:.2f} | {', '.join(f'{x:.2f}' for x in side['seconds'])} | "
                    f"{side['new_tokens_per_s_median']:.1f} | {side['prompts_per_s_median']:.2f} | "
                    f"{side['flop_utilisation'] * 100:.1f}% |")
    rows.append(f"| **speed-up** | **{result['ratio']:.2f}×** | | | | |")
    rows.append(f"\n{result['model']['source']}, {result['model']['parameters'] / 1e6:.1f}M parameters; "
                f"{result['machine']['cpu']}, {result['machine']['torch_threads']} threads")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
