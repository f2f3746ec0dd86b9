"""`lethe screen`: score the private and held-out records once per model, then screen the per-record losses.

Scores: scores/{release,trusted}_{private,held_out}.npz (lethe.scoring's one pass) and scores/screen.jsonl (one line a
record: its loss under each model, token count, z, p and whether it was flagged), from which `rescreen` rebuilds
every number of results.json.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from lethe.config import ScreenConfig
from lethe.data.chunking import chunk_documents
from lethe.data.splits import load_disjoint_sets
from lethe.errors import LetheError
from lethe.models import load_configured, model_context
from lethe.runs import Run
from lethe.scoring import TokenScores, score_chunks
from lethe.screening.statistics import MIN_HELD_OUT, MIN_PRIVATE, Screen, screen_values, verdict_line

log = logging.getLogger("lethe")
SETS = ("private", "held_out")


def check_same_tokenizer(release_tokenizer, trusted_tokenizer) -> None:
    if release_tokenizer.get_vocab() != trusted_tokenizer.get_vocab():
        raise LetheError("the trusted model's tokenizer differs from the release's: the loss difference compares "
                         "per-token likelihoods, so both must share a tokenizer (screen without --trusted instead)")


def statistic_values(records: dict[str, dict[str, np.ndarray]], statistic: str, role: str) -> np.ndarray:
    """release: the release's mean token loss; difference: release − trusted, per record."""
    values = records[role]["loss"]
    return values - records[role]["trusted_loss"] if statistic == "difference" else values


def identical_to_trusted(records: dict[str, dict[str, np.ndarray]]) -> bool:
    """The release scores every record as the trusted model does (an unchanged release): no difference to screen."""
    return "trusted_loss" in records["private"] and all(
        np.allclose(records[role]["loss"], records[role]["trusted_loss"], rtol=0, atol=1e-6) for role in SETS)


def screen_records(records: dict[str, dict[str, np.ndarray]], config: ScreenConfig) -> dict[str, Screen]:
    """Each statistic the records allow: the release's loss alone, and release − trusted when a trusted model scored
    (unless the two score every record alike)."""
    names = ["release"] + (["difference"] if "trusted_loss" in records["private"]
                           and not identical_to_trusted(records) else [])
    return {name: screen_values(statistic_values(records, name, "private"), records["private"]["tokens"],
                                statistic_values(records, name, "held_out"), records["held_out"]["tokens"],
                                alpha=config.alpha, tail=config.tail, permutations=config.permutations,
                                lam=config.storey_lambda, seed=config.seed)
            for name in names}


def summarise(records: dict, screens: dict[str, Screen], config: ScreenConfig) -> dict:
    """results.json's verdict: the difference when a trusted model was given (it sees what the release changed),
    else the release's own loss; every statistic's tests beside it."""
    primary = "difference" if "difference" in screens else "release"
    main = screens[primary].summary
    ids = records["private"]["ids"]
    return {"model": config.model, "trusted": config.trusted, "primary": primary,
            "verdict": verdict_line(main, primary), "p_value": main["p_value"], "anomalous": main["anomalous"],
            "targeted_share": main["targeted_share"], "flagged": main["flagged"],
            "flagged_ids": [ids[i] for i in np.flatnonzero(screens[primary].flagged)],
            "private": len(ids), "held_out": len(records["held_out"]["ids"]),
            "identical_to_trusted": identical_to_trusted(records),
            # how far the release moved this kind of data as a whole (no calibrated null: a fact to read, not a test)
            "held_out_shift": (float(np.median(statistic_values(records, "difference", "held_out")))
                               if "trusted_loss" in records["held_out"] else None),
            "statistics": {name: screen.summary for name, screen in screens.items()}}


def write_records(path: Path, records: dict, screens: dict[str, Screen]) -> None:
    with path.open("w") as handle:
        for role in SETS:
            for i, record_id in enumerate(records[role]["ids"]):
                row = {"id": record_id, "set": role, "tokens": int(records[role]["tokens"][i]),
                       "loss": float(records[role]["loss"][i])}
                if "trusted_loss" in records[role]:
                    row["trusted_loss"] = float(records[role]["trusted_loss"][i])
                for name, screen in screens.items():
                    row[f"z_{name}"] = float((screen.z if role == "private" else screen.held_out_z)[i])
                    if role == "private":
                        row[f"p_{name}"], row[f"flagged_{name}"] = float(screen.p[i]), bool(screen.flagged[i])
                handle.write(json.dumps(row) + "\n")


def read_records(run_dir: Path) -> dict[str, dict]:
    """The per-record losses of scores/screen.jsonl, by set: what every statistic is computed from."""
    rows = [json.loads(line) for line in (run_dir / "scores" / "screen.jsonl").read_text().splitlines() if line]
    records = {}
    for role in SETS:
        mine = [row for row in rows if row["set"] == role]
        records[role] = {"ids": [row["id"] for row in mine], "tokens": np.array([row["tokens"] for row in mine]),
                         "loss": np.array([row["loss"] for row in mine])}
        if mine and "trusted_loss" in mine[0]:
            records[role]["trusted_loss"] = np.array([row["trusted_loss"] for row in mine])
    return records


def rescreen(run_dir: Path, config: ScreenConfig) -> dict:
    """results.json's screening numbers, rebuilt from scores/screen.jsonl alone."""
    records = read_records(run_dir)
    return summarise(records, screen_records(records, config), config)


def records_of(scores: dict[str, TokenScores], trusted: dict[str, TokenScores] | None,
               ids: dict[str, list[str]]) -> dict[str, dict]:
    """Per record (its document's id: one chunk a record): token count, the release's loss, the trusted one's."""
    records = {}
    for role in SETS:
        records[role] = {"ids": ids[role], "tokens": scores[role].lengths,
                         "loss": scores[role].sample_nll()}
        if trusted is not None:
            records[role]["trusted_loss"] = trusted[role].sample_nll()
    return records


def _score_sets(model, tokenizer, chunks: dict, config: ScreenConfig, run: Run, name: str) -> dict[str, TokenScores]:
    scores = {role: score_chunks(model, chunks[role], batch_tokens=config.batch_tokens,
                                 pad_id=tokenizer.pad_token_id, desc=f"{name}: scoring {role}", vocab_stats=False)
              for role in SETS}
    for role, role_scores in scores.items():
        role_scores.save(run.scores_dir / f"{name}_{role}")
    return scores


def run_screen(config: ScreenConfig, out: Path, *, overwrite: bool = False) -> dict:
    from lethe.screening.plots import plot_screens

    with Run.start(out, "screen", config, overwrite=overwrite, seed=config.seed) as run:
        docs = dict(zip(SETS, load_disjoint_sets(
            run, {"private": config.private, "held_out": config.held_out}, config.data, ("private", "held-out"),
            "a record in both would be compared with itself; held-out records must be ones no poisoner saw"),
            strict=True))
        if len(docs["held_out"]) < MIN_HELD_OUT or len(docs["private"]) < MIN_PRIVATE:
            raise LetheError(f"{len(docs['private'])} private and {len(docs['held_out'])} held-out records are too "
                             f"few to test: at least {MIN_PRIVATE} private and {MIN_HELD_OUT} held-out are needed")
        model, tokenizer = load_configured(config)
        chunks = {role: chunk_documents(docs[role], tokenizer, config.chunk, model_context(model), f"the {role} set")
                  for role in SETS}
        scores = _score_sets(model, tokenizer, chunks, config, run, "release")
        del model
        trusted = None
        if config.trusted is not None:
            trusted_model, trusted_tokenizer = load_configured(config, config.trusted)
            check_same_tokenizer(tokenizer, trusted_tokenizer)
            trusted = _score_sets(trusted_model, tokenizer, chunks, config, run, "trusted")
            del trusted_model
        records = records_of(scores, trusted, {role: [c.doc_id for c in chunks[role]] for role in SETS})
        screens = screen_records(records, config)
        write_records(run.scores_dir / "screen.jsonl", records, screens)
        results = summarise(records, screens, config)
        results["plots"] = [str(p.relative_to(out)) for p in plot_screens(records, screens, out / "plots")]
        log.info("%s", results["verdict"])
        run.write_results(results)
    return results
