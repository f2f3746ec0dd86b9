"""`lethe pretrain`: a small Llama-style model trained from scratch on known splits.

Membership is then exact ground truth (members.json lists every trained document), and the same
recipe minus the forget set gives an exactly retrained model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lethe.config import Layer, PretrainConfig, read_yaml, resolve
from lethe.data.chunking import chunk_splits
from lethe.data.splits import default_training_splits, find_splits, load_splits
from lethe.engine import Trainer, objectives
from lethe.errors import LetheError
from lethe.models import build_model, count_parameters, gpt2_tokenizer, load_tokenizer, train_bpe_tokenizer
from lethe.perplexity import ppl_results, score_splits
from lethe.processes import from_main_process, process_state
from lethe.runs import Run, read_json, write_json

log = logging.getLogger("lethe")


def pretrain_config(preset: str = "tiny", *layers: dict[str, Any]) -> PretrainConfig:
    """Preset defaults, then each layer (a YAML file's mapping, `--set` overrides) on top."""
    return resolve(PretrainConfig, Layer("preset", {"preset": preset}), *layers)


def retrain(original: Path, forget: list[str], out: Path, *, overwrite: bool = False, resume: bool = False,
            accept_data_change: bool = False) -> dict:
    """Exact retraining: the original run's recipe and tokenizer, without the forget splits."""
    original = Path(original)
    if not (original / "run.json").is_file() or read_json(original / "run.json").get("command") != "pretrain":
        raise LetheError(f"{original} is not a `lethe pretrain` run; exact retraining needs the known recipe")
    recipe = read_yaml(original / "config.yaml")
    config = resolve(PretrainConfig, recipe, {"exclude": sorted({*recipe.get("exclude", []), *forget}),
                                              "tokenizer_from": str(original / "tokenizer")})
    return pretrain(config, out, overwrite=overwrite, resume=resume, accept_data_change=accept_data_change)


def training_splits(config: PretrainConfig) -> list[str]:
    available = find_splits(config.data)
    chosen = config.splits or default_training_splits(available)
    unknown = [name for name in [*chosen, *config.exclude] if name not in available]
    if unknown:
        raise LetheError(f"{config.data} has no split {unknown[0]!r} (has: {', '.join(available)})")
    chosen = [name for name in chosen if name not in config.exclude]
    if not chosen:
        raise LetheError("no splits left to pre-train on")
    return chosen


def _tokenizer(config: PretrainConfig, run: Run, texts: list[str], resume: bool):
    saved = run.path / "tokenizer"
    if not resume and process_state().is_main_process:
        if config.tokenizer_from is not None:
            tokenizer = load_tokenizer(config.tokenizer_from)
        elif config.arch.tokenizer == "gpt2":
            tokenizer = gpt2_tokenizer()
        else:
            tokenizer = train_bpe_tokenizer(texts, config.arch.vocab_size)
        tokenizer.save_pretrained(saved)
    process_state().wait_for_everyone()
    return load_tokenizer(saved)


def pretrain(config: PretrainConfig, out: Path, *, overwrite: bool = False, resume: bool = False,
             accept_data_change: bool = False) -> dict:
    """`lethe pretrain`: train a model from scratch on known splits, then score every split; a resumed run refuses
    data that changed since it started unless `accept_data_change`."""
    from accelerate.utils import set_seed

    state = process_state()
    with Run.start(out, "pretrain", config, overwrite=overwrite, resume=resume, seed=config.train.seed,
                   accept_data_change=accept_data_change) as run:
        names = training_splits(config)
        all_splits = find_splits(config.data)
        members = load_splits(config.data, names)
        run.record_data(all_splits)
        if state.is_main_process:
            write_json(run.path / "members.json",
                       {name: [doc.id for doc in docs] for name, docs in members.items()})
        tokenizer = _tokenizer(config, run, [doc.text for docs in members.values() for doc in docs], resume)
        chunks = chunk_splits(members, tokenizer, config.chunk, config.arch.context)
        train_chunks = [chunk for split_chunks in chunks.values() for chunk in split_chunks]
        set_seed(config.train.seed)
        model = build_model(config.arch, tokenizer)
        log.info("pre-training a %.2fM-parameter model on %d chunks from %s", count_parameters(model) / 1e6,
                 len(train_chunks), ", ".join(names))
        trainer = Trainer(model, objectives.get("lm")(), {"train": train_chunks}, config.train,
                          pad_id=tokenizer.pad_token_id, checkpoint_dir=run.checkpoints_dir,
                          desc=f"pretrain {config.preset}", tokenizer=tokenizer)
        result = trainer.fit(resume=resume)
        results: dict[str, Any] = {}
        model = trainer.save_model(run.path / "model", tokenizer)
        if state.is_main_process:
            scores = score_splits(model, tokenizer, load_splits(config.data), config.chunk, config.eval_batch_tokens,
                                  run.scores_dir)
            results = {
                "model": {"preset": config.preset, "parameters": count_parameters(model),
                          "path": str(run.path / "model")},
                "train": {"splits": names, "chunks": len(train_chunks), "steps": result.steps, "tokens": result.tokens,
                          "seconds": result.seconds, "tokens_per_second": result.tokens_per_second,
                          "processes": state.num_processes, "stopped": result.stopped, "history": result.history},
                **ppl_results(scores),
            }
            run.write_results(results)
    return from_main_process(results)
