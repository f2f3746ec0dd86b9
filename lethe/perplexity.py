"""Perplexity of a model on data splits, from per-token scores that are saved for every later use."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm.auto import tqdm

from lethe.config import ChunkConfig, EvalPplConfig
from lethe.data.chunking import Chunk, chunk_splits
from lethe.data.splits import find_splits, load_splits
from lethe.models import load_configured, model_context
from lethe.runs import Run
from lethe.scoring import TokenScores, length_buckets, score_chunks

log = logging.getLogger("lethe")


def score_chunk_sets(model, chunked: dict[str, list[Chunk]], batch_tokens: int, pad_id: int,
                     scores_dir: Path | None = None) -> dict[str, TokenScores]:
    """Score every named chunk set once, under one progress bar; if scores_dir is given, save per-sample scores
    as <name>.npz/.jsonl."""
    total = sum(len(length_buckets([len(c) for c in chunks], batch_tokens)) for chunks in chunked.values())
    scores = {}
    with tqdm(total=total, desc=f"scoring {len(chunked)} splits", unit="batch") as bar:
        for name, chunks in chunked.items():
            scores[name] = score_chunks(model, chunks, batch_tokens=batch_tokens, pad_id=pad_id, bar=bar)
            if scores_dir is not None:
                scores[name].save(scores_dir / name)
    return scores


def score_splits(model, tokenizer, splits: dict, chunk: ChunkConfig, batch_tokens: int,
                 scores_dir: Path | None = None) -> dict[str, TokenScores]:
    """Score every split once; if scores_dir is given, save per-sample scores as <split>.npz/.jsonl."""
    chunked = chunk_splits(splits, tokenizer, chunk, model_context(model))
    return score_chunk_sets(model, chunked, batch_tokens, tokenizer.pad_token_id, scores_dir)


def ppl_results(scores: dict[str, TokenScores]) -> dict:
    return {"ppl": {name: s.perplexity() for name, s in scores.items()},
            "splits": {name: s.summary() for name, s in scores.items()}}


def score_configured_splits(config: EvalPplConfig, run: Run) -> tuple[object, dict[str, TokenScores]]:
    """The configured model's scores of the configured splits (all by default), saved in the run; and its tokenizer."""
    available = find_splits(config.data)
    names = config.splits or list(available)
    run.record_data({name: available[name] for name in names if name in available})
    model, tokenizer = load_configured(config)
    splits = load_splits(config.data, names)
    return tokenizer, score_splits(model, tokenizer, splits, config.chunk, config.batch_tokens, run.scores_dir)


def eval_ppl(config: EvalPplConfig, out: Path, *, overwrite: bool = False) -> dict:
    """`lethe eval ppl`: token-weighted perplexity and next-token accuracy per split."""
    with Run.start(out, "eval ppl", config, overwrite=overwrite) as run:
        _, scores = score_configured_splits(config, run)
        results = {"model": str(config.model), **ppl_results(scores)}
        run.write_results(results)
    return results
