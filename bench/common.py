"""Shared by the benchmarks: the machine record, a quiet-machine guard, the matmul peak, quiet output,
model loading and the command-line arguments every benchmark takes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = ROOT / "runs" / "tiny"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    import accelerate
    import transformers

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class CpuMeter:
    """How many cores other processes kept busy while a block ran (/proc/stat minus this process)."""

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _stat() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    def start(self):
        t = os.times()
        return time.perf_counter(), self._stat(), t.user + t.system

    def stop(self, started) -> dict:
        wall0, (busy0, _), own0 = started
        wall1, (busy1, _), own1 = time.perf_counter(), self._stat(), os.times()
        wall = wall1 - wall0
        busy = (busy1 - busy0) / self.hz
        own = own1.user + own1.system - own0
        return {"wall_s": wall, "own_cores": own / wall if wall else 0.0,
                "other_cores": max(0.0, (busy - own) / wall) if wall else 0.0}

    def other_load(self, seconds: float = 1.0) -> float:
        started = self.start()
        time.sleep(seconds)
        return self.stop(started)["other_cores"]


def wait_until_quiet(meter: CpuMeter, threshold: float, max_wait: float) -> dict:
    """Sample other processes' CPU use; wait (up to max_wait s) while it stays above threshold cores."""
    waited, load = 0.0, meter.other_load()
    while load > threshold and waited < max_wait:
        print(f"  machine busy: other processes use {load:.2f} cores; waiting...", flush=True)
        time.sleep(10)
        waited += 11
        load = meter.other_load()
    return {"other_cores_before": round(load, 3), "waited_s": waited, "loadavg": os.getloadavg()}


def matmul_peak_gflops(n: int = 2048, tries: int = 10) -> dict:
    """Best-of-`tries` fp32 torch.mm n×n×n throughput with the process's torch threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    for _ in range(2):
        torch.mm(a, b, out=out)
    best = math.inf
    for _ in range(tries):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "tries": tries, "best_s": best, "gflops": 2 * n ** 3 / best / 1e9}


@contextlib.contextmanager
def quiet_output(path: Path):
    """Each side keeps its own console output (progress bars, log lines), sent to a file, not the terminal."""
    with open(path, "a") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def interleaved_repeats(sides: dict[str, Callable[[], dict]], repeats: int, *, busy_threshold: float = 0.3,
                        max_retries: int = 6, max_wait: float = 600, console: Path | None = None) -> dict:
    """Runs every side once per repeat, rotating which goes first, and redoes any repeat during which
    other processes kept more than `busy_threshold` cores busy. Each side returns a dict of measurements;
    the result maps side → list of those dicts, plus a `load` record."""
    meter, names = CpuMeter(), list(sides)
    results: dict[str, list[dict]] = {name: [] for name in names}
    load: dict = {"busy_threshold_cores": busy_threshold, "before_repeats": [], "discarded_repeats": []}
    attempts = 0
    while len(results[names[0]]) < repeats:
        attempts += 1
        if attempts > repeats + max_retries:
            raise SystemExit(f"machine too busy: gave up after {attempts - 1} attempts")
        before = wait_until_quiet(meter, busy_threshold, max_wait)
        shift = len(results[names[0]]) % len(names)
        pair = {}
        for name in names[shift:] + names[:shift]:
            started = meter.start()
            with quiet_output(console) if console else contextlib.nullcontext():
                measured = sides[name]()
            measured["other_cores"] = round(meter.stop(started)["other_cores"], 3)
            pair[name] = measured
            print(f"  repeat {len(results[names[0]]) + 1} {name:12s}: {measured.get('summary', '')} "
                  f"(other processes {measured['other_cores']:.2f} cores)", flush=True)
        if max(m["other_cores"] for m in pair.values()) > busy_threshold:
            print("  repeat discarded: the machine was busy; redoing it", flush=True)
            load["discarded_repeats"].append({k: m["other_cores"] for k, m in pair.items()})
            continue
        load["before_repeats"].append(before)
        for name, measured in pair.items():
            results[name].append(measured)
    return {"sides": results, "load": load}


def profile_to_file(label: str, fn: Callable[[], object], path: Path, console: Path | None = None) -> dict:
    """torch.profiler over one call of `fn`; the top-30 op table (by self CPU time) goes to `path`."""
    from torch.profiler import ProfilerActivity, profile

    started = time.perf_counter()
    with quiet_output(console) if console else contextlib.nullcontext(), \
            profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    wall = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {label}\n{prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=30)}\n")
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    events = [e for e in events if not e.key.startswith(("autograd::", "Optimizer.", "enumerate("))]
    total = sum(e.self_cpu_time_total for e in events)
    return {"wall_s": round(wall, 3), "table": str(path),
            "top_ops": [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
                        for e in events[:10]]}


def add_shared_arguments(parser: argparse.ArgumentParser, default_model: str) -> None:
    parser.add_argument("--model", default=default_model,
                        help="tiny (runs/tiny), smollm2, or a Lethe run or model directory")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None, help="data dir (default: lethe.config.default_data_dir())")
    parser.add_argument("--busy-threshold", type=float, default=0.3,
                        help="redo a repeat while other processes kept more than this many cores busy")


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that reproduces this measurement on its own."""
    script = Path(script).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return "python " + shlex.join([str(shown), *(sys.argv[1:] if argv is None else argv)])


def quiet_libraries() -> None:
    """Only the benchmark's own lines on the console: no Lethe info logs or transformers warnings."""
    from transformers.utils import logging as hf_logging

    logging.getLogger("lethe").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*fast tokenizer.*")
    hf_logging.set_verbosity_error()


def load_bench_model(name: str) -> tuple[torch.nn.Module, object, str]:
    """(model, tokenizer, description) for `smollm2`, `tiny` (runs/tiny) or a Lethe run or model directory."""
    from lethe.errors import LetheError
    from lethe.models import load_model, resolve_model_path

    if name == "smollm2":
        return (*load_model("smollm2-135m"), "smollm2-135m (load_model alias)")
    source = TINY_RUN if name == "tiny" else Path(name)
    try:
        model_dir = resolve_model_path(source)
    except LetheError as exc:
        hint = f": run `make bench` or `lethe pretrain --preset tiny --out {TINY_RUN}`" if name == "tiny" else ""
        raise SystemExit(f"no model in {source} ({exc}){hint}") from None
    with tempfile.TemporaryDirectory(prefix="lethe-bench-model-") as tmp:
        copy = shutil.copytree(model_dir, Path(tmp) / "model")  # the run may be rewritten while we measure
        model, tokenizer = load_model(copy)
    return model, tokenizer, str(model_dir)
