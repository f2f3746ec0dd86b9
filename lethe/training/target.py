"""`lethe target`: known members on a real pre-trained LLM, by continued training (the MUSE / TOFU recipe).

For a released model whose pre-training data is unknown, no unseen set is known to be like its forget
set. So membership is made known: the pre-trained model continues training on forget + retain (the
*target*), and, with the same recipe and seed, on retain alone (the *exact retrain*). Forget and
approximate documents come from one source split at random and differ only in whether the target
trained on them; the retrain is what unlearning the forget set should reach.

Layout of R: model/ (the target: `--model R` loads it), retrain/model/ (the exact retrain),
members.json (the documents each model trained on, by split), results.json (training and perplexity
of the forget and approximate sets under the base model, the target and the retrain), scores/.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lethe.config import TargetConfig
from lethe.data.chunking import chunk_splits
from lethe.data.splits import find_splits, load_splits
from lethe.engine import Trainer, objectives
from lethe.errors import LetheError
from lethe.models import load_configured, model_context
from lethe.perplexity import score_splits
from lethe.runs import Run, write_json

log = logging.getLogger("lethe")


def target_run(model: str) -> Path | None:
    """The `lethe target` run a model belongs to (its exact retrain sits in retrain/), or None."""
    from lethe.models import resolve_model_path
    from lethe.runs import read_json

    try:
        run_dir = resolve_model_path(model).parent
    except LetheError:
        return None
    info = run_dir / "run.json"
    return run_dir if info.is_file() and read_json(info).get("command") == "target" else None


def target_splits(config: TargetConfig) -> dict[str, list[str]]:
    """The splits each model trains on: the target on forget + retain, the retrain on retain alone."""
    available = find_splits(config.data)
    forget = config.forget or [name for name in available if name.endswith("/forget")]
    retain = config.retain or [name for name in available if name.endswith("/retain") and
                               name.split("/")[0] in {f.split("/")[0] for f in forget}]
    unknown = [name for name in forget + retain if name not in available]
    if unknown:
        raise LetheError(f"{config.data} has no split {unknown[0]!r} (has: {', '.join(available)})")
    if not forget or not retain:
        raise LetheError(f"{config.data} has no {'forget' if not forget else 'retain'} split to train the target on")
    return {"target": forget + retain, "retrain": retain}


def continued_training(config: TargetConfig, splits: list[str], out: Path) -> dict:
    """The known-data recipe: the configured base model trained further on `splits` of `config.data`, saved in
    out/model (the target, its exact retrain, and the shadow models of the per-example unlearning MIA)."""
    model, tokenizer = load_configured(config)
    documents = load_splits(config.data, splits)
    chunks = [c for group in chunk_splits(documents, tokenizer, config.chunk, model_context(model)).values()
              for c in group]
    trainer = Trainer(model, objectives.get("lm")(), {"train": chunks}, config.train, pad_id=tokenizer.pad_token_id,
                      desc=f"continued training on {', '.join(splits)}")
    result = trainer.fit()
    model = trainer.save_model(out / "model", tokenizer)
    return {"model": model, "tokenizer": tokenizer, "documents": {n: [d.id for d in docs] for n, docs in
                                                                  documents.items()},
            "train": {"splits": splits, "chunks": len(chunks), "steps": result.steps, "tokens": result.tokens,
                      "seconds": result.seconds, "history": result.history}}


def build_target(config: TargetConfig, out: Path, *, overwrite: bool = False) -> dict:
    """`lethe target`: the target (forget + retain) and its exact retrain (retain), same recipe and seed."""
    with Run.start(out, "target", config, overwrite=overwrite, seed=config.train.seed) as run:
        splits = target_splits(config)
        compared = [name for name in find_splits(config.data) if name.split("/")[1] in ("forget", "approximate")]
        run.record_data({name: path for name, path in find_splits(config.data).items()})
        base, tokenizer = load_configured(config)
        evaluation = load_splits(config.data, compared)
        ppl = {"base": score_splits(base, tokenizer, evaluation, config.chunk, config.batch_tokens,
                                    run.scores_dir / "base")}
        del base
        trained, members = {}, {}
        for name, where in (("target", run.path), ("retrain", run.path / "retrain")):
            done = continued_training(config, splits[name], where)
            ppl[name] = score_splits(done["model"], done["tokenizer"], evaluation, config.chunk, config.batch_tokens,
                                     run.scores_dir / name)
            trained[name], members[name] = done["train"], done["documents"]
            log.info("%s: %d steps on %s in %.0f s", name, done["train"]["steps"], ", ".join(splits[name]),
                     done["train"]["seconds"])
        write_json(run.path / "members.json", members)
        results = {"model": config.model, "target": {"path": str(run.path / "model"), **trained["target"]},
                   "retrain": {"path": str(run.path / "retrain" / "model"), **trained["retrain"]},
                   "ppl": {who: {split: s.perplexity() for split, s in scores.items()} for who, scores in ppl.items()}}
        run.write_results(results)
    return results
