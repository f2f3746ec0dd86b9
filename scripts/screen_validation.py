"""Validate `lethe screen` on the leakage study's releases (docs/screening.md): false positives, power, the adaptive
attacker. One scoring pass per model over the poisoned targets and a pool of never-targeted records of the same
kind; every draw then screens subsets of those per-record losses with the recipe's own statistics.

    python scripts/screen_validation.py RELEASES_SEED_DIR CLEAN_MODEL OUT [KEY=VALUE ...]

RELEASES_SEED_DIR: a study seed directory (pii/, released/<variant>/model) as scripts/screen_releases.py builds it.
The pool: that seed's calibration records plus every target and calibration record of a second `lethe data pii`
build (seed 1 by default; none of them seen by any release). Writes OUT/losses.json (every per-record loss, so every
number rebuilds) and OUT/validation.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from lethe.config import ChunkConfig, PiiConfig
from lethe.data.chunking import chunk_documents
from lethe.data.documents import read_documents
from lethe.models import load_model, model_context
from lethe.runs import write_json
from lethe.scoring import score_chunks
from lethe.screening.statistics import screen_values

SETTINGS = {"draws": 20, "null_draws": 100, "private": 100, "held_out": [50, 100, 250],
            "shares": [0.01, 0.05, 0.25, 1.0],
            "interpolation": [0.05, 0.1, 0.2, 0.35, 0.5, 1.0], "curve_releases": ["backdoor", "ftf_project"],
            "permutations": 199, "alpha": 0.05, "pool_seed": 1, "data": None}


def losses(model, tokenizer, docs) -> dict:
    chunks = chunk_documents(docs, tokenizer, ChunkConfig(max_chunks_per_doc=1), model_context(model))
    scores = score_chunks(model, chunks, pad_id=tokenizer.pad_token_id, progress=False, vocab_stats=False)
    return {"ids": [c.doc_id for c in chunks], "loss": scores.sample_nll().tolist(), "tokens": scores.lengths.tolist()}


def interpolated(clean, release, t: float):
    """θ = clean + t·(release − clean): an attacker who moves its targets less (the adaptive attacker's dial)."""
    import copy

    import torch

    model = copy.deepcopy(clean)
    with torch.no_grad():
        for mixed, target in zip(model.state_dict().values(), release.state_dict().values(), strict=True):
            if mixed.is_floating_point():
                mixed.copy_(mixed + t * (target - mixed))
    return model


def score_everything(seed_dir: Path, clean_path: str, out: Path, settings: dict) -> dict:
    from lethe.data.pii import build_pii

    pool_pii = out / "pool-pii"
    if not (pool_pii / "run.json").is_file():
        build_pii(PiiConfig(out=pool_pii, seed=settings["pool_seed"], members=250, nonmembers=250, calibration=250,
                            repetitions=1, filler_docs=2, validation_docs=2,
                            **({"data": settings["data"]} if settings["data"] else {})), overwrite=True)
    targets = read_documents(seed_dir / "pii" / "targets_all.jsonl")
    pool = (read_documents(seed_dir / "pii" / "calibration.jsonl") + read_documents(pool_pii / "targets_all.jsonl")
            + read_documents(pool_pii / "calibration.jsonl"))
    path = out / "losses.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    clean, tokenizer = load_model(clean_path)
    models = {"clean": clean_path} | {p.name: str(p / "model") for p in sorted((seed_dir / "released").iterdir())
                                      if (p / "model").is_dir()}
    for name, model_path in models.items():
        if name not in saved:
            model = clean if name == "clean" else load_model(model_path)[0]
            saved[name] = {"targets": losses(model, tokenizer, targets), "pool": losses(model, tokenizer, pool)}
            write_json(path, saved)
    for release in settings["curve_releases"]:
        if release not in models:
            continue
        full = load_model(models[release])[0]
        for t in settings["interpolation"]:
            name = f"{release}@{t}"
            if name not in saved:
                model = interpolated(clean, full, t)
                saved[name] = {"targets": losses(model, tokenizer, targets), "pool": losses(model, tokenizer, pool)}
                write_json(path, saved)
    return saved


def draw(rng, n_targets: int, n_pool: int, private: int, share: float, held_out: int):
    """Indices: targets in the private set, pool records in the private set, pool records held out."""
    k = int(round(share * private))
    chosen = rng.choice(n_targets, size=k, replace=False)
    rest = rng.permutation(n_pool)
    return chosen, rest[:private - k], rest[private - k:private - k + held_out]


def detection(saved: dict, release: str, share: float, held_out: int, draws: int, settings: dict, rng) -> dict:
    """Share of draws flagged, alone and against the clean model; the mean targeted-share estimate and flags."""
    data, clean = saved[release], saved["clean"]
    arrays = {key: {part: np.array(data[part][key]) for part in ("targets", "pool")} for key in ("loss", "tokens")}
    trusted = {part: np.array(clean[part]["loss"]) for part in ("targets", "pool")}
    counts = {"alone": [], "trusted": []}
    shares, flagged, precision = {"alone": [], "trusted": []}, {"alone": [], "trusted": []}, []
    for index in range(draws):
        chosen, private_pool, held = draw(rng, len(arrays["loss"]["targets"]), len(arrays["loss"]["pool"]),
                                          settings["private"], share, held_out)
        tokens = np.r_[arrays["tokens"]["targets"][chosen], arrays["tokens"]["pool"][private_pool]]
        held_tokens = arrays["tokens"]["pool"][held]
        for mode in counts:
            def value(part, idx, mode=mode):
                base = arrays["loss"][part][idx]
                return base - trusted[part][idx] if mode == "trusted" else base
            values = np.r_[value("targets", chosen), value("pool", private_pool)]
            if mode == "trusted" and np.allclose(np.r_[values, value("pool", held)], 0, atol=1e-6):
                counts[mode].append(False)  # identical to the trusted model: nothing to flag
                continue
            s = screen_values(values, tokens, value("pool", held), held_tokens, alpha=settings["alpha"],
                              permutations=settings["permutations"], seed=index)
            counts[mode].append(bool(s.summary["anomalous"]))
            shares[mode].append(s.summary["targeted_share"])
            flagged[mode].append(int(s.flagged.sum()))
            if mode == "trusted" and s.flagged.any():
                precision.append(float(s.flagged[:len(chosen)].sum() / s.flagged.sum()))
    return {mode: {"detected": float(np.mean(hits)), "share_estimate": float(np.mean(shares[mode])) if shares[mode]
                   else None, "flagged": float(np.mean(flagged[mode])) if flagged[mode] else 0.0}
            for mode, hits in counts.items()} | {"flag_precision": float(np.mean(precision)) if precision else None}


def planted(saved: dict, base: str, delta: float, share: float, held_out: int, draws: int, settings: dict,
            rng) -> dict:
    """A record-specific attacker on real per-record losses: `delta` nats added to the targeted share of the
    private records of release `base` (never-targeted pool records), alone and against the clean model."""
    loss, tokens = np.array(saved[base]["pool"]["loss"]), np.array(saved[base]["pool"]["tokens"])
    clean = np.array(saved["clean"]["pool"]["loss"])
    # a base identical to the trusted model (benign) leaves no difference to fit a null on: alone only
    hits = {"alone": []} if np.allclose(loss, clean, atol=1e-6) else {"alone": [], "trusted": []}
    for index in range(draws):
        rest = rng.permutation(len(loss))
        private, held = rest[:settings["private"]], rest[settings["private"]:settings["private"] + held_out]
        moved = np.zeros(len(private))
        moved[:int(round(share * len(private)))] = delta
        for mode in hits:
            offset = clean
            s = screen_values(loss[private] - (offset[private] if mode == "trusted" else 0) + moved, tokens[private],
                              loss[held] - (offset[held] if mode == "trusted" else 0), tokens[held],
                              alpha=settings["alpha"], permutations=settings["permutations"], seed=index)
            hits[mode].append(bool(s.summary["anomalous"]))
    return {"trusted": None} | {mode: float(np.mean(h)) for mode, h in hits.items()}


def shift(saved: dict, name: str) -> dict:
    """Mean loss move against the clean model: of the targets, of the never-targeted pool."""
    return {part: float(np.mean(np.array(saved[name][part]["loss"]) - np.array(saved["clean"][part]["loss"])))
            for part in ("targets", "pool")}


def main(seed_dir: str, clean: str, out_dir: str, *overrides: str) -> None:
    settings = dict(SETTINGS)
    for item in overrides:
        key, value = item.split("=", 1)
        settings[key] = json.loads(value) if key != "data" else value
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = score_everything(Path(seed_dir), clean, out, settings)
    rng = np.random.default_rng(0)
    releases = [name for name in saved if name != "clean" and "@" not in name]
    if settings.get("only") == "planted":  # add the planted curve to a finished validation.json
        results = json.loads((out / "validation.json").read_text())
        add_planted(results, saved, settings, rng)
        write_json(out / "validation.json", results)
        return
    results = {"settings": settings, "shift": {name: shift(saved, name) for name in saved if name != "clean"},
               "false_positives": {}, "power": {}, "curve": {}}
    for null in [name for name in releases if name in ("benign", "precurious")]:
        results["false_positives"][null] = detection(saved, null, 0.0, 250, settings["null_draws"], settings, rng)
        print(null, "false positives", results["false_positives"][null], flush=True)
    for release in [name for name in releases if name not in ("benign", "precurious")]:
        results["power"][release] = {f"{share}@{held}": detection(saved, release, share, held, settings["draws"],
                                                                   settings, rng)
                                     for share in settings["shares"] for held in settings["held_out"]}
        print(release, json.dumps({k: (v["alone"]["detected"], v["trusted"]["detected"])
                                   for k, v in results["power"][release].items()}), flush=True)
    for name in [n for n in saved if "@" in n] + [n for n in ("ftf_stop", "backdoor", "ftf_project") if n in saved]:
        results["curve"][name] = {"shift": shift(saved, name),
                                  **{f"share {share}": detection(saved, name, share, 250, settings["draws"], settings,
                                                                 rng) for share in (0.25, 1.0)}}
        print(name, results["curve"][name], flush=True)
    add_planted(results, saved, settings, rng)
    write_json(out / "validation.json", results)


def add_planted(results: dict, saved: dict, settings: dict, rng) -> None:
    base = "precurious" if "precurious" in saved else "benign"
    results["planted"] = {"base": base}
    for delta in settings.get("deltas", [-1.0, -0.5, -0.25, 0.25, 0.5, 1.0]):
        results["planted"][str(delta)] = {f"{share}@{held}": planted(saved, base, delta, share, held,
                                                                     settings["draws"], settings, rng)
                                          for share in settings["shares"] for held in settings["held_out"]}
        print("planted", delta, results["planted"][str(delta)], flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
