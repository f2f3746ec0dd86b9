#!/usr/bin/env python
"""Membership-inference suite: Lethe's one scoring pass per (model, set) vs the anchors' way, side by side.

Every attack of `lethe.attacks.membership.attacks` but gradnorm (one backward per sample on every side,
so left out), same model, samples and batch size, fp32, the process's torch threads:
- lethe: `run_mia`'s path: `score_chunks` once per (model, set) (target: members, non-members,
  calibration; reference: members, non-members), then every attack reads the saved scores.
- openunlearning: one batched forward pass per attack over the samples (given order, each batch padded
  to its longest sample), computing only that attack's statistic; reference_model runs target and
  reference forwards, reference_data forwards over the calibration set and the samples. Batch size:
  the rows Lethe puts in a batch of full-length chunks (batch_tokens // chunk_length).
- mimir: one document at a time: a target forward whose token log-probs serve loss, zlib and min_k, a
  second for min_k_pp (full-vocabulary probabilities), a reference forward, and one forward per
  calibration sample for reference_data. (Pre-tokenised ids: MIMIR's re-tokenising is not charged.)
Scores use Lethe's sign (higher = member) and must equal Lethe's to 1e-4 (absolute, or relative above
magnitude 1), else the run fails. zlib's texts are decoded once, untimed, for all sides. Timing: the
whole suite per side, sides interleaved per repeat, median of repeats; 2·N FLOPs per forwarded token.

Usage:
    python bench/mia_suite.py --model tiny --limit 64 --repeats 3 --out bench/results/mia_suite.json
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
import zlib
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

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

SPLITS = {"members": "code/forget", "nonmembers": "code/approximate", "calibration": "science/approximate"}
SETS = ("members", "nonmembers")
EXCLUDED = ("gradnorm",)
ANCHOR_ATTACKS = ("loss", "zlib", "min_k", "min_k_pp", "reference_model", "reference_data")
TOLERANCE = 1e-4  # absolute, or relative where |score| > 1
TARGET_SPEEDUP = 4.0


# -- models and data --------------------------------------------------------------------------------------

def perturbed_copy(model, seed: int, scale: float = 0.01):
    """A stand-in reference model: each weight tensor plus scale·N(0,1)·its std (seeded)."""
    reference = copy.deepcopy(model).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in reference.parameters():
            if param.numel() > 1:
                noise = torch.randn(param.shape, generator=generator).to(param.device)
                param.add_(noise * param.std() * scale)
    return reference


def load_samples(tokenizer, context: int, length: int, limit: int, data_dir: Path) -> dict[str, list]:
    from lethe.config import ChunkConfig
    from lethe.data.chunking import chunk_documents
    from lethe.data.splits import load_splits

    documents = load_splits(data_dir, list(SPLITS.values()))
    config = ChunkConfig(length=length, max_chunks_per_doc=None)
    chunks = {role: chunk_documents(documents[split], tokenizer, config, context)[:limit]
              for role, split in SPLITS.items()}
    for role, found in chunks.items():
        if not found:
            raise SystemExit(f"{SPLITS[role]} has no chunk of at least {config.min_tokens} tokens")
    return chunks


class ForwardCounter:
    """Counts forward calls and (padded) input positions of the hooked models."""

    def __init__(self, *models) -> None:
        self.calls = self.tokens = 0
        for model in models:
            model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        self.calls, self.tokens = self.calls + 1, self.tokens + kwargs["input_ids"].numel()


# -- formulas shared by the two anchor sides (Lethe's sign convention) ------------------------------------

def lowest_fraction_mean(values: torch.Tensor, k: float) -> float:
    sample = np.sort(values.double().cpu().numpy())
    return float(sample[:max(1, int(len(sample) * k / 100))].mean())


def reference_data_score(nll: np.ndarray, calibration_nll: np.ndarray) -> np.ndarray:
    """−log of the add-one-smoothed fraction of calibration samples with NLL at most the sample's."""
    at_most = np.searchsorted(np.sort(calibration_nll), nll, side="right")
    return -np.log((at_most + 1) / (len(calibration_nll) + 1))


# -- side 1: Lethe ----------------------------------------------------------------------------------------

def run_lethe(model, reference, chunks, texts, batch_tokens: int, pad_id: int, k: float) -> dict:
    from lethe.attacks.membership import AttackInputs, attacks
    from lethe.scoring import score_chunks

    def score(m, role, vocab_stats):  # as run_mia: vocabulary statistics only where min_k_pp reads them
        return score_chunks(m, chunks[role], batch_tokens=batch_tokens, pad_id=pad_id, progress=False,
                            vocab_stats=vocab_stats)

    target = {role: score(model, role, role in SETS) for role in chunks}
    reference_scores = {role: score(reference, role, False) for role in SETS}
    calibration_nll = target["calibration"].sample_nll()
    inputs = {role: AttackInputs(target=target[role], texts=texts[role], reference=reference_scores[role],
                                 calibration_nll=calibration_nll) for role in SETS}
    # the per-example attacks (LiRA, RMIA) need reference victims trained per record: not a per-set timing
    population = [name for name in attacks.names()
                  if name not in EXCLUDED and "reference_victims" not in attacks.get(name).needs]
    return {name: {role: attacks.get(name)(inputs[role], min_k=k) for role in SETS} for name in population}


# -- side 2: OpenUnlearning's way, one batched forward pass per attack -------------------------------------

def padded_batches(chunks, batch_size: int, pad_id: int, device):
    """In the given order; each batch right-padded to its longest sample; labels −100 on padding."""
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start:start + batch_size]
        width = max(len(c) for c in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, chunk in enumerate(batch):
            ids[row, :len(chunk)] = torch.tensor(chunk.input_ids)
            mask[row, :len(chunk)] = 1
        yield ids.to(device), mask.to(device), ids.masked_fill(mask == 0, -100).to(device)


def nll_statistic(logits, labels) -> list[float]:
    """OpenUnlearning's compute_batch_nll: per-sample mean token cross-entropy."""
    shifted = labels[:, 1:]
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), shifted, reduction="none", ignore_index=-100)
    return (losses.sum(1) / (shifted != -100).sum(1)).tolist()


def token_logprobs(logits, labels) -> list[torch.Tensor]:
    """OpenUnlearning's tokenwise_logprobs: log_softmax over the batch, gather, cut each row to its tokens."""
    shifted = labels[:, 1:]
    target = torch.log_softmax(logits, dim=-1)[:, :-1].gather(2, shifted.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return [target[row, shifted[row] != -100] for row in range(len(target))]


def min_k_pp_zscores(logits, labels) -> list[torch.Tensor]:
    """Min-K%++ from the full-vocabulary log-probs: (log p_t − μ_t) / σ_t per token."""
    shifted = labels[:, 1:]
    logp = torch.log_softmax(logits, dim=-1)[:, :-1]
    probs = logp.exp()
    mu = (probs * logp).sum(-1)
    var = (probs * logp.square()).sum(-1) - mu.square()
    z = (logp.gather(2, shifted.clamp_min(0).unsqueeze(-1)).squeeze(-1) - mu) / var.clamp_min(1e-12).sqrt()
    return [z[row, shifted[row] != -100] for row in range(len(z))]


def run_openunlearning(model, reference, chunks, texts, batch_size: int, pad_id: int, k: float) -> dict:
    device = next(model.parameters()).device

    @torch.no_grad()
    def per_sample(m, role: str, statistic: Callable) -> list:
        out = []
        for ids, mask, labels in padded_batches(chunks[role], batch_size, pad_id, device):
            out.extend(statistic(m(input_ids=ids, attention_mask=mask).logits, labels))
        return out

    def min_k(role: str, statistic: Callable) -> np.ndarray:
        return np.array([lowest_fraction_mean(v, k) for v in per_sample(model, role, statistic)])

    def nll(m, role: str) -> np.ndarray:
        return np.array(per_sample(m, role, nll_statistic))

    def reference_data(role: str) -> np.ndarray:
        return reference_data_score(nll(model, role), nll(model, "calibration"))

    attacks = {
        "loss": lambda role: -nll(model, role),
        "zlib": lambda role: -nll(model, role) / np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts[role]]),
        "min_k": lambda role: min_k(role, token_logprobs),
        "min_k_pp": lambda role: min_k(role, min_k_pp_zscores),
        "reference_model": lambda role: nll(reference, role) - nll(model, role),
        "reference_data": reference_data,
    }
    return {name: {role: fn(role) for role in SETS} for name, fn in attacks.items()}


# -- side 3: MIMIR's way, one document at a time -------------------------------------------------------------

def run_mimir(model, reference, chunks, texts, k: float) -> dict:
    device = next(model.parameters()).device

    @torch.no_grad()
    def logits_of(m, chunk) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.tensor([chunk.input_ids], device=device)
        return m(input_ids=ids).logits[0, :-1], ids[0, 1:].unsqueeze(-1)

    def token_logprobs_one(m, chunk) -> torch.Tensor:  # MIMIR's get_probabilities
        logits, targets = logits_of(m, chunk)
        return torch.log_softmax(logits, dim=-1).gather(-1, targets).squeeze(-1).double()

    def min_k_pp_one(chunk) -> torch.Tensor:  # MIMIR's MinKPlusPlusAttack: its own forward, full vocabulary
        logits, targets = logits_of(model, chunk)
        probs, logp = F.softmax(logits, dim=-1), F.log_softmax(logits, dim=-1)
        mu = (probs * logp).sum(-1)
        var = (probs * logp.square()).sum(-1) - mu.square()
        return (logp.gather(-1, targets).squeeze(-1) - mu) / var.clamp_min(1e-12).sqrt()

    calibration_nll = np.array([-token_logprobs_one(model, c).mean().item() for c in chunks["calibration"]])
    scores: dict[str, dict] = {name: {} for name in ANCHOR_ATTACKS}
    for role in SETS:
        per = {name: [] for name in ANCHOR_ATTACKS}
        for chunk, text in zip(chunks[role], texts[role], strict=True):
            logprobs = token_logprobs_one(model, chunk)  # shared by loss, zlib and min_k
            nll = -logprobs.mean().item()
            per["loss"].append(-nll)
            per["zlib"].append(-nll / len(zlib.compress(text.encode("utf-8"))))
            per["min_k"].append(lowest_fraction_mean(logprobs, k))
            per["min_k_pp"].append(lowest_fraction_mean(min_k_pp_one(chunk), k))
            per["reference_model"].append(-token_logprobs_one(reference, chunk).mean().item() - nll)
            per["reference_data"].append(nll)
        per["reference_data"] = reference_data_score(np.array(per["reference_data"]), calibration_nll)
        for name, values in per.items():
            scores[name][role] = np.asarray(values, dtype=np.float64)
    return scores


# -- checks and report ---------------------------------------------------------------------------------------

def compare(ours: dict, theirs: dict) -> dict:
    """Per attack: the largest absolute difference and the largest difference scaled by max(1, |Lethe|)."""
    out = {}
    for name, by_role in ours.items():
        if name not in theirs:
            raise SystemExit(f"attack {name!r} is registered in Lethe but not implemented by the bench's anchor sides")
        a = np.concatenate([by_role[r] for r in SETS]).astype(np.float64)
        b = np.concatenate([theirs[name][r] for r in SETS]).astype(np.float64)
        diff = np.abs(a - b)
        scaled = float(np.max(diff / np.maximum(1.0, np.abs(a))))
        out[name] = {"max_abs_diff": float(diff.max()), "max_scaled_diff": scaled,
                     "passed": bool(np.all(np.isfinite(b))) and scaled <= TOLERANCE}
    return out


def markdown_table(result: dict) -> str:
    rows = ["| side | wall s (median) | per repeat | forward passes | tokens forwarded | GFLOP/s (2N) "
            "| FLOP utilisation | Lethe speedup |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for name, side in result["sides"].items():
        speedup = result["speedup"].get(name)
        rows.append(f"| {name} | {side['wall_s_median']:.3f} | {', '.join(f'{x:.3f}' for x in side['wall_s'])} | "
                    f"{side['forwards']} | {side['tokens_forwarded']:,} | {side['gflops']:.2f} | "
                    f"{side['flop_utilisation'] * 100:.1f}% | {f'{speedup:.2f}×' if speedup else '—'} |")
    rows += ["", "| attack | max abs Δ vs openunlearning | max abs Δ vs mimir |", "|---|---:|---:|"]
    for name, diff in result["match"]["openunlearning"].items():
        rows.append(f"| {name} | {diff['max_abs_diff']:.2e} | {result['match']['mimir'][name]['max_abs_diff']:.2e} |")
    model, machine = result["model"], result["machine"]
    rows.append(f"\n{model['parameters'] / 1e6:.2f}M parameters; fp32 matmul peak "
                f"{result['matmul_peak']['gflops']:.1f} GFLOP/s (torch.mm 2048³); {machine['cpu']}, "
                f"{machine['torch_threads']} threads; gradnorm excluded (one backward per sample on every side)")
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_shared_arguments(parser, default_model="tiny")
    parser.add_argument("--reference", default=None, help="reference model (default: a seeded perturbed copy)")
    parser.add_argument("--limit", type=int, default=64, help="samples per set (members, non-members, calibration)")
    parser.add_argument("--chunk-length", type=int, default=128)
    parser.add_argument("--batch-tokens", type=int, default=4096, help="Lethe's score_chunks batch_tokens")
    parser.add_argument("--min-k", type=float, default=20, help="K of min_k and min_k_pp, in percent")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mia_suite.json")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, command: str, peak: dict | None = None) -> dict:
    """The benchmark's record (nothing written); `peak`: a matmul peak measured earlier in the same run."""
    quiet_libraries()
    from lethe.config import default_data_dir
    from lethe.models import count_parameters, load_model, model_context

    model, tokenizer, model_desc = load_bench_model(args.model)
    if args.reference:
        from lethe.attacks.mia_suite import check_same_tokenizer

        reference, reference_tokenizer = load_model(args.reference)
        check_same_tokenizer(tokenizer, reference_tokenizer)
        reference_desc = args.reference
    else:
        reference, reference_desc = perturbed_copy(model, args.seed), f"target + 0.01·N(0,1)·std, seed {args.seed}"
    params = count_parameters(model)
    chunks = load_samples(tokenizer, model_context(model), args.chunk_length, args.limit,
                          args.data or default_data_dir())
    texts = {role: [tokenizer.decode(c.input_ids) for c in chunks[role]] for role in SETS}  # zlib's input
    pad_id, batch_size = tokenizer.pad_token_id, max(1, args.batch_tokens // args.chunk_length)
    counter = ForwardCounter(model, reference)
    with torch.no_grad():  # lazy initialisation out of the timed region
        for m in (model, reference):
            m(input_ids=torch.tensor([chunks["members"][0].input_ids], device=next(m.parameters()).device))
    print(f"model: {model_desc}; {params / 1e6:.2f}M parameters; reference: {reference_desc}; "
          f"{', '.join(f'{len(c)} {r}' for r, c in chunks.items())} chunks of ≤{args.chunk_length} tokens; "
          f"batch_tokens {args.batch_tokens} (anchor batch size {batch_size}); gradnorm excluded from the suite",
          flush=True)
    peak = peak or matmul_peak_gflops()

    runners = {
        "lethe": lambda: run_lethe(model, reference, chunks, texts, args.batch_tokens, pad_id, args.min_k),
        "openunlearning": lambda: run_openunlearning(model, reference, chunks, texts, batch_size, pad_id, args.min_k),
        "mimir": lambda: run_mimir(model, reference, chunks, texts, args.min_k),
    }

    def timed(run: Callable[[], dict]) -> dict:
        counter.calls = counter.tokens = 0
        started = time.perf_counter()
        scores = run()
        wall = time.perf_counter() - started
        return {"wall_s": wall, "forwards": counter.calls, "tokens": counter.tokens, "scores": scores,
                "summary": f"{wall:7.3f} s, {counter.calls} forwards, {counter.tokens:,} tokens"}

    with tempfile.TemporaryDirectory(prefix="lethe-bench-") as tmp:
        measured = interleaved_repeats({name: (lambda run=run: timed(run)) for name, run in runners.items()},
                                       args.repeats, busy_threshold=args.busy_threshold,
                                       console=Path(tmp) / "console")

    lethe_scores = measured["sides"]["lethe"][0]["scores"]
    match = {name: compare(lethe_scores, measured["sides"][name][0]["scores"]) for name in ("openunlearning", "mimir")}
    flops_per_token = 2 * params
    sides = {}
    for name, runs in measured["sides"].items():
        wall = statistics.median(r["wall_s"] for r in runs)
        tokens = runs[0]["tokens"]
        sides[name] = {"wall_s_median": wall, "wall_s": [r["wall_s"] for r in runs], "forwards": runs[0]["forwards"],
                       "tokens_forwarded": tokens, "gflops": tokens * flops_per_token / wall / 1e9,
                       "flop_utilisation": tokens * flops_per_token / wall / (peak["gflops"] * 1e9)}
    speedup = {name: sides[name]["wall_s_median"] / sides["lethe"]["wall_s_median"]
               for name in ("openunlearning", "mimir")}
    passed = all(d["passed"] for side in match.values() for d in side.values())
    return {
        "benchmark": "mia_suite", "command": command, "machine": machine_info(), "load": measured["load"],
        "model": {"name": args.model, "source": model_desc, "reference": reference_desc, "parameters": params,
                  "flops_per_token": flops_per_token},
        "setup": {"splits": SPLITS, "samples": {r: len(c) for r, c in chunks.items()}, "limit": args.limit,
                  "chunk_length": args.chunk_length, "batch_tokens": args.batch_tokens,
                  "anchor_batch_size": batch_size, "min_k": args.min_k, "repeats": args.repeats,
                  "attacks": list(lethe_scores), "excluded": {"gradnorm": "one backward per sample on every side"}},
        "matmul_peak": peak, "sides": sides, "speedup": speedup, "target_speedup": TARGET_SPEEDUP,
        "reached_target": {name: s >= TARGET_SPEEDUP for name, s in speedup.items()},
        "match": match, "match_tolerance": TOLERANCE, "match_passed": passed,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = measure(args, command_line(__file__, argv))
    speedup, match, passed = result["speedup"], result["match"], result["match_passed"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    reached = ", ".join(f"{n} {s:.2f}× ({'reached' if s >= TARGET_SPEEDUP else 'NOT reached'})"
                        for n, s in speedup.items())
    print(f"\n{markdown_table(result)}\n\ntarget ≥{TARGET_SPEEDUP:.0f}×: {reached}\n"
          f"score check (1e-4): {'passed' if passed else 'FAILED'}\nwrote {args.out}")
    if not passed:
        failed = [f"{side}/{name}" for side, d in match.items() for name, v in d.items() if not v["passed"]]
        raise SystemExit(f"scores differ from Lethe's beyond {TOLERANCE}: {', '.join(failed)}")
    return result


if __name__ == "__main__":
    main()
