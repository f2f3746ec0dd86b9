#!/usr/bin/env python
"""Every benchmark side by side in one run: bench/results.json and a markdown table, bench/results.md.

One process measures the fp32 matmul peak once, records the machine, then runs each benchmark's
`measure` (the same code and checks as its own CLI) at a size that fitted about 7 minutes on the
2-core CI machine before the compiled side and the NPO/adversarial steps were added (they add a few
compilations and 3 × 3 × 12 short steps): the unlearning step (eager and compiled), NPO and adversarial
steps and the MIA suite on the pre-trained tiny model (runs/tiny), extraction-attack generation on
SmolLM2-135M with 32 prompts. Each row compares Lethe with one
reference implementation: the ratio is how many times faster Lethe is (above 1: Lethe faster), FLOP
utilisation is against the matmul peak, and parity is the benchmark's correctness check. A
benchmark that fails is recorded and the others still run; the outputs then go to
results.failed.json / .md so that earlier results are kept, and the exit status is 1.

Usage:
    python bench/run_all.py                          # the measured run (make bench), on a quiet machine
    python bench/run_all.py --quick --model runs/tiny --out /tmp/bench.json   # seconds: does it all run?
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench import generation, head_blocks, mia_suite, reference_step, unlearning_step  # noqa: E402
from bench.common import command_line, machine_info, matmul_peak_gflops  # noqa: E402

# -- one row per (benchmark, reference): Lethe's figure, the reference's, ratio, FLOP utilisation, parity --------

def unlearning_rows(record: dict) -> list[dict]:
    check = record["loss_check"]
    return [{"benchmark": "unlearning step", "reference": "HF Trainer + GradDiff compute_loss", "unit": "tokens/s",
             "lethe_value": record["lethe"]["tokens_per_s_median"],
             "reference_value": record["reference"]["tokens_per_s_median"], "ratio": record["ratio"],
             "flop_utilisation": {side: record[side]["flop_utilisation"] for side in ("lethe", "reference")},
             "parity": {"check": f"first {check['steps']} losses within {check['tolerance_abs']:g}",
                        "passed": check["passed"], "max_abs_diff": check["max_abs_diff"]}}] + compiled_rows(record)


def compiled_rows(record: dict) -> list[dict]:
    """The extra Lethe sides: train.fused_head off (the logits, as before), train.compile."""
    rows = []
    for key, name in (("logits_head", "unlearning step, train.fused_head off"),
                      ("compiled", "unlearning step, train.compile")):
        variant = record.get(key)
        if variant is None:
            continue
        check = variant["loss_check"]
        note = f" (compiling took {variant['first_step_s']:.0f} s, untimed)" if key == "compiled" else ""
        rows.append({"benchmark": name, "reference": "HF Trainer + GradDiff compute_loss",
                     "unit": "tokens/s", "lethe_value": variant["tokens_per_s_median"],
                     "reference_value": record["reference"]["tokens_per_s_median"], "ratio": variant["ratio"],
                     "flop_utilisation": {"lethe": variant["flop_utilisation"],
                                          "reference": record["reference"]["flop_utilisation"]},
                     "parity": {"check": f"first {len(check['losses'])} losses within "
                                         f"{record['loss_check']['tolerance_abs']:g}{note}",
                                "passed": check["passed"], "max_abs_diff": check["max_abs_diff"]}})
    return rows


def reference_rows(record: dict) -> list[dict]:
    rows = []
    for method, result in record["methods"].items():
        sides, check = result["sides"], result["loss_check"]
        for name, label, parity in (
                ("per_step", "the same method, reference forwarded every step",
                 {"check": f"first {check['steps']} losses bit-identical", "passed": check["per_step_identical"]}),
                ("hf_trainer", "HF Trainer, reference forwarded in compute_loss",
                 {"check": f"first {check['steps']} losses within {check['hf_tolerance_abs']:g}",
                  "passed": check["hf_max_abs_diff"] <= check["hf_tolerance_abs"],
                  "max_abs_diff": check["hf_max_abs_diff"]})):
            rows.append({"benchmark": f"{method} step, reference cached", "reference": label, "unit": "tokens/s",
                         "lethe_value": sides["lethe"]["tokens_per_s_median"],
                         "reference_value": sides[name]["tokens_per_s_median"], "ratio": result["speedup"][name],
                         "flop_utilisation": {"lethe": sides["lethe"]["flop_utilisation"],
                                              "reference": sides[name]["flop_utilisation"]},
                         "parity": parity})
    return rows


def mia_rows(record: dict) -> list[dict]:
    sides, rows = record["sides"], []
    for name, label in (("openunlearning", "OpenUnlearning-style"), ("mimir", "MIMIR-style")):
        match, tolerance = record["match"][name], record["match_tolerance"]
        rows.append({"benchmark": "MIA suite", "reference": f"{label}, {sides[name]['forwards']} forwards",
                     "unit": "s", "lethe_value": sides["lethe"]["wall_s_median"],
                     "reference_value": sides[name]["wall_s_median"], "ratio": record["speedup"][name],
                     "flop_utilisation": {"lethe": sides["lethe"]["flop_utilisation"],
                                          "reference": sides[name]["flop_utilisation"]},
                     "parity": {"check": f"{len(match)} attacks' per-sample scores within {tolerance:g}",
                                "passed": all(m["passed"] for m in match.values()),
                                "max_abs_diff": max(m["max_abs_diff"] for m in match.values())}})
    return rows


def generation_rows(record: dict) -> list[dict]:
    mismatched = record["identical_outputs"]["mismatched_prompts"]
    return [{"benchmark": "extraction generation", "reference": "one prompt at a time", "unit": "new tokens/s",
             "lethe_value": record["lethe"]["new_tokens_per_s_median"],
             "reference_value": record["reference"]["new_tokens_per_s_median"], "ratio": record["ratio"],
             "flop_utilisation": {side: record[side]["flop_utilisation"] for side in ("lethe", "reference")},
             "parity": {"check": "continuations identical token for token", "passed": not mismatched,
                        "mismatched_prompts": len(mismatched)}}]


def head_rows(record: dict) -> list[dict]:
    parity, rows, head = record["parity"]["block_rule"], record["rows"], record["head"]
    shape = f"{head['vocab']:,} × {head['hidden']} head"
    return [{"benchmark": f"fused head, {label} ({shape}, {rows['block_rule']} rows per block)",
             "reference": f"cache-sized blocks of {rows['cache_sized']} rows", "unit": "s",
             "lethe_value": record["medians"]["block_rule"][key],
             "reference_value": record["medians"]["cache_sized"][key],
             "ratio": record["speedup_over_cache_sized"][key],
             "flop_utilisation": {"lethe": record["flop_utilisation"]["block_rule"][key],
                                  "reference": record["flop_utilisation"]["cache_sized"][key]},
             "parity": {"check": "loss, gradients and scores as the unfused head's (1e-5 / 1e-4 / 1e-4)",
                        "passed": record["passed"], "max_abs_diff": parity["scores_abs"]}}
            for key, label in (("loss_s", f"loss + gradients of {record['tokens']} tokens"),
                               ("score_s", "scoring reduction"))]


@dataclass(frozen=True)
class Benchmark:
    module: ModuleType
    compares: str
    rows: Callable[[dict], list[dict]]
    full: Callable[[str], list[str]]  # model for the tiny benchmarks → the module's CLI arguments
    quick: list[str]


BENCHMARKS = {
    "unlearning_step": Benchmark(
        unlearning_step, "Lethe's Trainer (ga_gd_in) vs a Hugging Face Trainer with GradDiff's compute_loss",
        unlearning_rows,
        lambda model: ["--model", model, "--steps", "30", "--batch-size", "8", "--chunk-length", "128", "--compiled",
                       "--logits-head"],
        ["--steps", "2", "--batch-size", "2", "--chunk-length", "32"]),
    "reference_step": Benchmark(
        reference_step, "NPO and adversarial steps: reference work cached per example vs recomputed every step, "
        "and vs a Hugging Face Trainer", reference_rows,
        lambda model: ["--model", model, "--batch-size", "8", "--chunk-length", "128"],
        ["--batch-size", "2", "--chunk-length", "32", "--epochs", "3"]),
    "mia_suite": Benchmark(
        mia_suite, "run_mia's one scoring pass per (model, set) vs OpenUnlearning's and MIMIR's ways, 6 attacks",
        mia_rows, lambda model: ["--model", model, "--limit", "64"],
        ["--limit", "4", "--chunk-length", "32", "--batch-tokens", "64"]),
    "head_blocks": Benchmark(
        head_blocks, "the fused head's blocks of at least 128 rows vs cache-sized blocks, at SmolLM2's vocabulary",
        head_rows, lambda model: ["--model", "smollm2"], ["--tokens", "128", "--chunk-length", "64"]),
    "generation": Benchmark(
        generation, "generate_batched (sorted, left-padded, KV-cached batches) vs one generate call per prompt",
        generation_rows, lambda model: ["--model", "smollm2", "--prompts", "32", "--batch-size", "32"],
        ["--prompts", "4", "--batch-size", "4", "--shortest", "8", "--longest", "12", "--max-new-tokens", "8"]),
}


def benchmark_argv(bench: Benchmark, args: argparse.Namespace) -> list[str]:
    if args.quick:  # every benchmark on --model; timings meaningless, so no waiting for a quiet machine
        argv = ["--model", args.model, *bench.quick, "--repeats", "1", "--busy-threshold", "999"]
    else:
        argv = [*bench.full(args.model), "--repeats", str(args.repeats)]
    return argv + (["--data", str(args.data)] if args.data else [])


# -- report -------------------------------------------------------------------------------------------------------

def figure(value: float, unit: str) -> str:
    return f"{value:.2f} {unit}" if unit == "s" else f"{value:,.0f} {unit}"


def percent(share: float) -> str:
    return f"{share * 100:.0f}%" if share >= 0.1 else f"{share * 100:.1f}%"


def markdown(result: dict) -> str:
    peak, machine = result["matmul_peak"], result["machine"]
    lines = [f"# Benchmarks{' (quick check: timings not meaningful)' if result['quick'] else ''}", "",
             f"`{result['command']}` — {result['started']}, {result['wall_s']:.0f} s; {machine['cpu']}, "
             f"{machine['cores']} cores, {machine['torch_threads']} torch threads, torch {machine['torch']}; "
             f"fp32 matmul peak {peak['gflops']:.1f} GFLOP/s (torch.mm {peak['n']}³, best of {peak['tries']}).", "",
             "| benchmark | Lethe | reference | ratio | FLOP util (Lethe / ref) | parity |",
             "|---|---:|---|---:|---:|---|"]
    for row in result["rows"]:
        util = row["flop_utilisation"]
        parity = row["parity"]
        lines.append(f"| {row['benchmark']} | {figure(row['lethe_value'], row['unit'])} | {row['reference']}: "
                     f"{figure(row['reference_value'], row['unit'])} | **{row['ratio']:.2f}×** | "
                     f"{percent(util['lethe'])} / {percent(util['reference'])} | "
                     f"{'passed' if parity['passed'] else '**FAILED**'}: {parity['check']} |")
    for name, error in result["errors"].items():
        lines.append(f"| {name} | – | – | – | – | **did not run**: {error} |")
    lines += ["", "Ratio: how many times faster Lethe is than the reference (above 1: Lethe faster). "
              "FLOP utilisation: model FLOPs (6·N per trained token, 2·N per forwarded token) per second "
              "over the matmul peak. Each benchmark's full record, with its stand-alone command, is in "
              "results.json."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smallest sizes, one repeat, all on --model: checks that everything runs")
    parser.add_argument("--model", default="tiny", help="model of the tiny benchmarks (tiny = runs/tiny, or a path)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--data", type=Path, default=None, help="data dir (default: lethe.config.default_data_dir())")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json",
                        help="results JSON; the markdown table goes next to it (.md)")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r} (known: {', '.join(BENCHMARKS)})")
    args.only = chosen
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started, clock = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
    peak = matmul_peak_gflops(n=256, tries=3) if args.quick else matmul_peak_gflops()
    print(f"fp32 matmul peak: {peak['gflops']:.1f} GFLOP/s", flush=True)
    records, rows, errors = {}, [], {}
    for name in args.only:
        bench = BENCHMARKS[name]
        bench_argv = benchmark_argv(bench, args)
        print(f"\n== {name}: {bench.compares}", flush=True)
        try:
            record = bench.module.measure(bench.module.parse_args(bench_argv),
                                          command_line(bench.module.__file__, bench_argv), peak)
        except (Exception, SystemExit) as exc:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            errors[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            continue
        records[name] = {"compares": bench.compares, **record}
        rows += bench.rows(record)
    result = {"command": command_line(__file__, argv), "quick": args.quick, "started": started,
              "wall_s": time.perf_counter() - clock, "machine": machine_info(), "matmul_peak": peak,
              "rows": rows, "parity_passed": all(r["parity"]["passed"] for r in rows), "errors": errors,
              "benchmarks": records}
    out = args.out if not errors else args.out.with_name(f"{args.out.stem}.failed.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(f"\n{markdown(result)}\nwrote {out} and {out.with_suffix('.md')}", flush=True)
    if errors or not result["parity_passed"]:
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()
