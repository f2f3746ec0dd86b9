"""Training-data extraction: prompt with each target's prefix, decode, and look for its secret.

A target is a JSONL record with `id`, `prefix` and `secret` (`lethe data pii` writes them, with
`kind` and more). Whitespace that ends the prefix is moved to the front of the secret, so the
prompt ends on a word as it did in training ("... is" + " 123-45-6789").

Per decoding strategy (greedy, beam search's best beam, top-k sampling with n guesses):
- exact: a guess's first tokens are the secret's tokens;
- secret: the secret string appears anywhere in a decoded guess;
- token match: the fraction of the secret's tokens a guess reproduces position by position (best guess).
NSR counts targets reconstructed exactly by at least one strategy; rate = NSR / targets.

Exposure (Carlini et al., "The Secret Sharer", 2019) for secrets of a digit format (no letters,
e.g. an SSN "###-##-####" or phone "(###) ###-####"): the candidate space R is every string of
that format; candidates are ranked by the model's log-likelihood given the prefix, and
exposure = log2|R| - log2(rank of the secret). When |R| <= exposure.enumerate_up_to, every
candidate is scored (exact rank). Otherwise M = exposure.candidates random candidates are scored
and exposure is estimated as -log2((k+1)/(M+1)), k being the sampled candidates at least as likely
as the secret (an estimate of -log2 Pr[candidate at least as likely], which saturates at log2(M+1));
`exposure_skewnorm` extrapolates beyond that cap by fitting a skew-normal to the candidates'
negative log-likelihoods, as the paper does.

A prefix that does not fit in the model's context together with the tokens to decode is an error
(never silently truncated: a truncated prompt is a different attack).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lethe.config import DecodingConfig, ExposureConfig, ExtractConfig
from lethe.data.documents import jsonl_records
from lethe.data.padding import pad_sequences
from lethe.errors import LetheError
from lethe.hub import is_hub_dataset, read_hub_targets
from lethe.models import load_configured, model_context
from lethe.runs import Run

log = logging.getLogger("lethe")

SLACK_TOKENS = 4  # default decoding length: the longest secret of the batch plus this


@dataclass(frozen=True)
class Target:
    id: str
    prompt: str  # the prefix without its trailing whitespace
    secret: str
    expected: str  # trailing whitespace of the prefix + secret: what the model should continue with
    kind: str = ""


def read_targets(path: str | Path) -> tuple[list[Target], Path | None]:
    """(targets, the file they were read from) of a JSONL file or an `hf:` data set split (a Hub data set of PII
    or canary records; `?prefix_field=...&secret_field=...` name its columns)."""
    if is_hub_dataset(path):
        records, cached = read_hub_targets(path)
        rows = enumerate(records, 1)
    else:
        cached = path = Path(path)
        if not path.is_file():
            raise LetheError(f"targets file {path} does not exist")
        rows = jsonl_records(path)
    targets = []
    for number, record in rows:
        for field in ("id", "prefix", "secret"):
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise LetheError(f"{path} line {number} has no non-empty text field {field!r}")
        prompt = record["prefix"].rstrip()
        targets.append(Target(record["id"], prompt, record["secret"], record["prefix"][len(prompt):] +
                              record["secret"], str(record.get("kind") or "")))
    if not targets:
        raise LetheError(f"targets file {path} holds no targets")
    if len({t.id for t in targets}) < len(targets):
        raise LetheError(f"{path} repeats target ids")
    return targets, cached


# -- generation -----------------------------------------------------------------------------------------

def strategy_kwargs(strategy: str, decoding: DecodingConfig) -> dict:
    """generate() arguments of a strategy, set explicitly so a generation_config.json cannot change the strategy."""
    if strategy == "greedy":
        return {"do_sample": False, "num_beams": 1}
    if strategy == "beam":
        return {"do_sample": False, "num_beams": decoding.num_beams}
    return {"do_sample": True, "top_k": decoding.top_k, "top_p": 1.0, "temperature": 1.0,
            "num_return_sequences": decoding.guesses}


@torch.no_grad()
def generate_batched(model, prompts: Sequence[Sequence[int]], new_tokens: Sequence[int], *, pad_id: int,
                     eos_id: int | None, kwargs: dict, batch_size: int, seed: int = 0,
                     bar: tqdm | None = None) -> list[list[list[int]]]:
    """Continuations (token ids, cut at EOS) per prompt and guess: KV-cached `generate` on left-padded
    batches of similar length, each batch decoding as many tokens as its longest request."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: list[list[list[int]]] = [[] for _ in prompts]
    for number, start in enumerate(range(0, len(order), batch_size)):
        batch = order[start:start + batch_size]
        ids, mask = pad_sequences([prompts[index] for index in batch], pad_id, side="left")
        width = ids.shape[1]
        config = GenerationConfig(max_new_tokens=max(new_tokens[i] for i in batch), pad_token_id=pad_id,
                                  eos_token_id=eos_id, use_cache=True, **kwargs)
        if kwargs.get("do_sample"):
            torch.manual_seed(seed + number)  # reproducible whatever ran before
        output = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
        guesses = output[:, width:].view(len(batch), -1, output.shape[1] - width).tolist()
        for row, index in enumerate(batch):
            results[index] = [g[:g.index(eos_id)] if eos_id in g else g for g in guesses[row]]
        if bar is not None:
            bar.update(1)
    return results


def token_match(guess: Sequence[int], expected: Sequence[int]) -> float:
    return sum(a == b for a, b in zip(guess, expected, strict=False)) / len(expected)


# -- exposure -------------------------------------------------------------------------------------------

def digit_format(secret: str) -> str | None:
    """`123-45-6789` → `###-##-####`; None when the secret has letters or no digits."""
    if re.search(r"[^\W\d_]", secret) or not re.search(r"\d", secret):
        return None
    return re.sub(r"\d", "#", secret)


def _fill(fmt: str, digits: str) -> str:
    it = iter(digits)
    return re.sub("#", lambda _: next(it), fmt)


def candidates(secret: str, fmt: str, config: ExposureConfig, rng: random.Random) -> tuple[list[str], str, int]:
    """(candidates, method, |R|): every string of the format, or M random ones other than the secret."""
    count = fmt.count("#")
    space = 10 ** count
    if space <= config.enumerate_up_to:
        return [_fill(fmt, f"{i:0{count}d}") for i in range(space)], "enumeration", space
    drawn: set[str] = set()
    while len(drawn) < min(config.candidates, space - 1):
        value = _fill(fmt, f"{rng.randrange(space):0{count}d}")
        if value != secret:
            drawn.add(value)
    return sorted(drawn), "sampling", space


@torch.no_grad()
def continuation_logliks(model, prompt: Sequence[int], options: Sequence[Sequence[int]], batch_size: int,
                         pad_id: int) -> np.ndarray:
    """log p(option | prompt) for each option: the prompt runs once, its KV cache is shared by all options."""
    device = next(model.parameters()).device
    head = model(input_ids=torch.tensor([list(prompt)], device=device), use_cache=True)
    first = torch.log_softmax(head.logits[0, -1].float(), -1)
    scores = []
    for start in range(0, len(options), batch_size):
        batch = options[start:start + batch_size]
        ids, option_mask = pad_sequences(batch, pad_id)
        ids = ids.to(device)
        mask = torch.cat([torch.ones((len(batch), len(prompt)), dtype=torch.long), option_mask], dim=1).to(device)
        cache = copy.deepcopy(head.past_key_values)
        cache.batch_repeat_interleave(len(batch))
        logits = model(input_ids=ids, attention_mask=mask, past_key_values=cache).logits[:, :-1].float()
        later = logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - logits.logsumexp(-1)
        token_logp = torch.cat([first[ids[:, 0]][:, None], later], dim=1)
        valid = mask[:, len(prompt):].bool()
        scores.append(token_logp.masked_fill(~valid, 0).sum(1).double().cpu())
    return torch.cat(scores).numpy()


def exposure(model, tokenizer, target: Target, fmt: str, config: ExposureConfig, rng: random.Random) -> dict:
    from scipy.stats import skewnorm

    others, method, space = candidates(target.secret, fmt, config, rng)
    others = [c for c in others if c != target.secret]
    lead = target.expected[:len(target.expected) - len(target.secret)]
    encoded = tokenizer([lead + c for c in [target.secret, *others]], add_special_tokens=False)["input_ids"]
    prompt = tokenizer(target.prompt, add_special_tokens=False)["input_ids"]
    logliks = continuation_logliks(model, prompt, encoded, config.batch_size, tokenizer.pad_token_id)
    secret, rest = logliks[0], logliks[1:]
    at_least = int((rest >= secret).sum())  # ties count against the secret
    result = {"method": method, "space": space, "candidates": len(others), "loglik": float(secret)}
    if method == "enumeration":
        result.update(rank=1 + at_least, exposure=math.log2(space) - math.log2(1 + at_least))
    else:
        params = skewnorm.fit(-rest)
        tail = max(float(skewnorm.cdf(-secret, *params)), 1 / space)  # Pr[candidate at least as likely]
        result.update(at_least=at_least, exposure=math.log2(len(rest) + 1) - math.log2(at_least + 1),
                      cap=math.log2(len(rest) + 1), exposure_skewnorm=-math.log2(tail))
    return result


# -- the attack -----------------------------------------------------------------------------------------

def _check_context(targets: list[Target], prompts, expected, new_tokens: list[int], context: int) -> None:
    for target, prompt, secret, new in zip(targets, prompts, expected, new_tokens, strict=True):
        needed = len(prompt) + max(new, len(secret))
        if needed > context:
            raise LetheError(f"target {target.id!r}: its prefix is {len(prompt)} tokens and {max(new, len(secret))} "
                             f"more are decoded, beyond the model's context of {context} tokens; shorten the "
                             "prefixes (lethe data pii --set prefix_chars=...) or lower decoding.max_new_tokens")


def _rate(hits: list[bool]) -> dict:
    return {"nsr": int(sum(hits)), "rate": sum(hits) / len(hits)}


def extract(config: ExtractConfig, out: Path, *, overwrite: bool = False) -> dict:
    """`lethe attack extract`: results.json (NSR, rate, per strategy and kind, exposure) and generations.jsonl."""
    decoding = config.decoding
    with Run.start(out, "attack extract", config, overwrite=overwrite, seed=decoding.seed) as run:
        targets, targets_file = read_targets(config.targets)  # inside the run: a Hub split's commit is its record
        if targets_file is not None:
            run.record_data({"targets": targets_file})
        model, tokenizer = load_configured(config)
        prompts = tokenizer([t.prompt for t in targets], add_special_tokens=False)["input_ids"]
        expected = tokenizer([t.expected for t in targets], add_special_tokens=False)["input_ids"]
        new_tokens = [decoding.max_new_tokens or len(e) + SLACK_TOKENS for e in expected]
        _check_context(targets, prompts, expected, new_tokens, model_context(model))

        batches = math.ceil(len(targets) / config.batch_size) * len(decoding.strategies)
        generations = {}
        with tqdm(total=batches, desc=f"extracting {len(targets)} targets", unit="batch") as bar:
            for strategy in decoding.strategies:
                generations[strategy] = generate_batched(
                    model, prompts, new_tokens, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                    kwargs=strategy_kwargs(strategy, decoding), batch_size=config.batch_size, seed=decoding.seed,
                    bar=bar)

        rows, rng = [], random.Random(decoding.seed)
        formats = [digit_format(t.secret) if config.exposure.enabled else None for t in targets]
        for i, target in enumerate(tqdm(targets, desc="exposure", disable=not any(formats), leave=False)):
            per_strategy = {}
            for strategy, guesses in generations.items():
                texts = tokenizer.batch_decode(guesses[i], skip_special_tokens=True)
                per_strategy[strategy] = {
                    "exact": any(g[:len(expected[i])] == expected[i] for g in guesses[i]),
                    "secret": any(target.secret in text for text in texts),
                    "token_match": max(token_match(g, expected[i]) for g in guesses[i]), "guesses": texts}
            rows.append({"id": target.id, "kind": target.kind, "prompt": target.prompt, "secret": target.secret,
                         "exact": any(s["exact"] for s in per_strategy.values()),
                         "secret_found": any(s["secret"] for s in per_strategy.values()),
                         "token_match": max(s["token_match"] for s in per_strategy.values()),
                         "strategies": per_strategy,
                         "exposure": exposure(model, tokenizer, target, formats[i], config.exposure, rng)
                         if formats[i] else None})
        with (run.path / "generations.jsonl").open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        results = summarise(rows, config)
        run.write_results(results)
    return results


def summarise(rows: list[dict], config: ExtractConfig) -> dict:
    strategies = {}
    for strategy in config.decoding.strategies:
        cells = [row["strategies"][strategy] for row in rows]
        strategies[strategy] = {"guesses": len(cells[0]["guesses"]), **_rate([c["exact"] for c in cells]),
                                "secret": _rate([c["secret"] for c in cells]),
                                "token_match": float(np.mean([c["token_match"] for c in cells]))}
    kinds = sorted({row["kind"] for row in rows})
    exposed = [row["exposure"] for row in rows if row["exposure"]]
    values = [e["exposure"] for e in exposed]
    return {
        "model": config.model, "targets_file": str(config.targets), "targets": len(rows),
        **_rate([row["exact"] for row in rows]), "secret": _rate([row["secret_found"] for row in rows]),
        "token_match": float(np.mean([row["token_match"] for row in rows])),
        "strategies": strategies,
        "kinds": {kind: {"targets": sum(r["kind"] == kind for r in rows),
                         **_rate([r["exact"] for r in rows if r["kind"] == kind])} for kind in kinds},
        "exposure": {"targets": len(exposed), "methods": sorted({e["method"] for e in exposed}),
                     "mean": float(np.mean(values)), "median": float(np.median(values)), "max": float(max(values))}
        if exposed else {"targets": 0},
    }


def format_extraction_table(results: dict) -> str:
    lines = [f"{'strategy':<10} {'guesses':>7} {'NSR':>5} {'rate':>7} {'secret':>7} {'token match':>12}"]
    for name, s in results["strategies"].items():
        lines.append(f"{name:<10} {s['guesses']:>7} {s['nsr']:>5} {s['rate']:>7.1%} {s['secret']['rate']:>7.1%} "
                     f"{s['token_match']:>12.3f}")
    lines.append(f"{'any':<10} {'':>7} {results['nsr']:>5} {results['rate']:>7.1%} {results['secret']['rate']:>7.1%} "
                 f"{results['token_match']:>12.3f}   ({results['targets']} targets)")
    exposure = results["exposure"]
    if exposure["targets"]:
        lines.append(f"exposure ({', '.join(exposure['methods'])}, {exposure['targets']} digit-format secrets): "
                     f"mean {exposure['mean']:.1f} bits, median {exposure['median']:.1f}, max {exposure['max']:.1f}")
    return "\n".join(lines)
