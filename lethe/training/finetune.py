"""`lethe finetune`: the victim's side of a supply-chain attack — fine-tune a released model on private data D_ft.

Full fine-tuning, LoRA, or only the LM head (plus the last few transformer blocks), each optionally
with DP-SGD through Opacus. Validation perplexity is measured before and after, and the per-sample
scores of D_ft and the validation set are kept for the attacks that follow.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from lethe.config import FinetuneConfig
from lethe.data.chunking import Chunk, chunk_documents
from lethe.data.splits import load_disjoint_sets
from lethe.engine import Trainer, objectives
from lethe.errors import LetheError
from lethe.models import count_parameters, load_configured, model_context
from lethe.processes import from_main_process, is_main_process
from lethe.runs import Run
from lethe.scoring import TokenScores, score_chunks

log = logging.getLogger("lethe")


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of decoder blocks: the ModuleList with one entry per hidden layer (model.layers, transformer.h)."""
    layers = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == layers:
            return module
    raise LetheError(f"cannot find the {layers} transformer blocks of {type(model).__name__}")


def heads_are_tied(model: torch.nn.Module) -> bool:
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight


def train_head_only(model: torch.nn.Module, blocks: int) -> None:
    """Freeze everything but the LM head and the last `blocks` transformer blocks."""
    stack = transformer_blocks(model) if blocks else []
    if blocks > len(stack):
        raise LetheError(f"trainable_layers={blocks}, but the model has only {len(stack)} transformer blocks")
    model.requires_grad_(False)
    model.get_output_embeddings().requires_grad_(True)
    for block in list(stack)[len(stack) - blocks:]:
        block.requires_grad_(True)
    if heads_are_tied(model):
        log.warning("the LM head shares its weight with the input embeddings: training the head trains the "
                    "embeddings too")


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _chunks(docs, tokenizer, config: FinetuneConfig, context: int, role: str) -> list[Chunk]:
    chunks = chunk_documents(docs, tokenizer, config.chunk, context)
    if not chunks:
        raise LetheError(f"the {role} set {getattr(config, role)!r} has no sample of at least "
                         f"{config.chunk.min_tokens} tokens")
    return chunks


def finetune(config: FinetuneConfig, out: Path, *, overwrite: bool = False) -> dict:
    """`lethe finetune`: the victim's fine-tuning (full, LoRA, head; optionally DP-SGD) of `config.model` on D_ft."""
    main = is_main_process()  # trains with the others; alone scores and writes
    results: dict = {}
    with Run.start(out, "finetune", config, overwrite=overwrite, seed=config.train.seed) as run:
        train_docs, validation_docs = load_disjoint_sets(
            run, {"data": config.data, "validation": config.validation}, config.data_dir, ("fine-tuning", "validation"),
            "validation perplexity must be measured on held-out text")
        model, tokenizer = load_configured(config)
        context = model_context(model)
        chunks = {role: _chunks(docs, tokenizer, config, context, role)
                  for role, docs in (("data", train_docs), ("validation", validation_docs))}

        scored = {role: c for role, c in chunks.items() if role == "validation" or config.score_data}

        def score(current, stage: str) -> dict[str, TokenScores]:
            scores = {role: score_chunks(current, c, batch_tokens=config.batch_tokens, pad_id=tokenizer.pad_token_id,
                                         desc=f"scoring {role} ({stage})") for role, c in scored.items()}
            for role, role_scores in scores.items():
                role_scores.save(run.scores_dir / role / stage)
            return scores

        before = score(model, "before") if main else None
        total = count_parameters(model)  # of the saved model: LoRA adapters are merged into it
        if config.mode == "head":
            train_head_only(model, config.trainable_layers)
        # DP-SGD needs a plain mean of per-sample losses (see lm_per_sample)
        objective = objectives.get("lm_per_sample" if config.dp else "lm")()
        trainer = Trainer(model, objective, {"train": chunks["data"]}, config.train, pad_id=tokenizer.pad_token_id,
                          checkpoint_dir=run.checkpoints_dir,
                          desc=f"finetune ({config.mode}{', DP' if config.dp else ''})", dp=config.dp,
                          tokenizer=tokenizer)
        trainable = trainable_parameters(trainer.unwrapped_model())
        result = trainer.fit()
        privacy = trainer.privacy.summary() if trainer.privacy is not None else None
        model = trainer.save_model(run.path / "model", tokenizer)
        if not main:
            return from_main_process(results)
        after = score(model, "after")
        results = {
            "model": config.model, "mode": config.mode, "data": config.data, "validation": config.validation,
            "parameters": {"total": total, "trainable": trainable},
            "utility": {"val_ppl": {"before": before["validation"].perplexity(),
                                    "after": after["validation"].perplexity()}},
            **({"data_ppl": {"before": before["data"].perplexity(), "after": after["data"].perplexity()}}
               if config.score_data else {}),
            "samples": {role: len(c) for role, c in chunks.items()},
            "train": {"steps": result.steps, "tokens": result.tokens, "seconds": result.seconds,
                      "stopped": result.stopped, "history": result.history},
            "dp": privacy,
            "path": str(run.path / "model"),
            "unchanged": trainer.weights_unchanged,
        }
        run.write_results(results)
    return from_main_process(results)
