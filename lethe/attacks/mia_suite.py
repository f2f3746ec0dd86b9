"""`lethe attack mia`: score members and non-members once per model, then run every attack on the scores."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from lethe.attacks.blind import blind_baseline, blind_verdict, is_separable
from lethe.attacks.membership import AttackInputs, ReferenceVictimScores, attacks
from lethe.attacks.metrics import MIA_FPRS, fpr_key, mia_metrics, rate_text
from lethe.attacks.plots import plot_roc
from lethe.attacks.reference_victims import keep_of, per_example_parameters, read_manifest
from lethe.config import MiaConfig
from lethe.data.chunking import Chunk, chunk_documents
from lethe.data.documents import Document, check_disjoint
from lethe.data.splits import load_set
from lethe.errors import LetheError
from lethe.models import load_configured, model_context
from lethe.runs import Run, write_json
from lethe.scoring import sample_gradient_norms, score_chunks
from lethe.tables import Table

log = logging.getLogger("lethe")
SETS = ("members", "nonmembers")


def check_same_tokenizer(tokenizer, reference_tokenizer) -> None:
    if tokenizer.get_vocab() != reference_tokenizer.get_vocab():
        raise LetheError("the reference model's tokenizer differs from the target's; reference_model compares "
                         "per-token likelihoods, so both models must share a tokenizer")


def selected_attacks(config: MiaConfig) -> list[str]:
    """The configured attacks, or by default every attack whose inputs the config provides."""
    given = {"reference": config.reference_model is not None or bool(config.reference_models),
             "calibration_nll": config.calibration is not None,
             "reference_victims": config.reference_victims is not None}
    names = config.attacks or [name for name in attacks.names()
                               if all(given.get(need, True) for need in attacks.get(name).needs)]
    for name in names:
        missing = [need for need in attacks.get(name).needs if not given.get(need, True)]
        if missing:
            flag = {"reference": "--reference-model", "calibration_nll": "calibration",
                    "reference_victims": "reference_victims"}[missing[0]]
            raise LetheError(f"attack {name!r} needs {flag}")
    return names


def _chunks(docs: list[Document], tokenizer, config: MiaConfig, context: int, name: str) -> list[Chunk]:
    chunks = chunk_documents(docs, tokenizer, config.chunk, context, f"the {name} set")
    if not chunks:
        raise LetheError(f"the {name} set has no sample of at least {config.chunk.min_tokens} tokens")
    return chunks


def run_mia(config: MiaConfig, out: Path, *, overwrite: bool = False) -> dict:
    if config.gradnorm_p not in (1, 2, math.inf):
        raise LetheError(f"gradnorm_p must be 1, 2 or inf, not {config.gradnorm_p}")
    names = selected_attacks(config)
    with Run.start(out, "attack mia", config, overwrite=overwrite) as run:
        docs, files = {}, {}
        for role in SETS + (("calibration",) if config.calibration else ()):
            docs[role], files[role] = load_set(getattr(config, role), config.data)
        unseen = "non-members must be unseen data, or the AUC means nothing"
        check_disjoint(docs["members"], docs["nonmembers"], ("member", "non-member"), unseen)
        if "calibration" in docs:
            check_disjoint(docs["members"], docs["calibration"], ("member", "calibration"), unseen)
        run.record_data(files)
        model, tokenizer = load_configured(config)
        context = model_context(model)
        chunks = {role: _chunks(d, tokenizer, config, context, role) for role, d in docs.items()}
        pad = tokenizer.pad_token_id
        # every input below is built only when a selected attack declares it in its `needs`
        needs = {need for name in names for need in attacks.get(name).needs}
        scores = {role: score_chunks(model, c, batch_tokens=config.batch_tokens, pad_id=pad, desc=f"scoring {role}",
                                     vocab_stats=role in SETS and "vocab_stats" in needs)
                  for role, c in chunks.items()}
        # the texts always: the blind baseline reads them too
        inputs = {role: AttackInputs(target=scores[role],
                                     texts=[tokenizer.decode(c.input_ids) for c in chunks[role]])
                  for role in SETS}
        for role in SETS:
            if "grad_norms" in needs:
                inputs[role].grad_norms = sample_gradient_norms(model, chunks[role], p=config.gradnorm_p,
                                                                desc=f"gradient norms, {role}")
            if "calibration_nll" in needs:
                inputs[role].calibration_nll = scores["calibration"].sample_nll()
        del model
        references = ({"": config.reference_model} if config.reference_model else {}) | {
            f"_{name}": path for name, path in config.reference_models.items()}
        if "reference" not in needs:
            references = {}
        reference_scores = {}
        for suffix, path in references.items():
            reference, reference_tokenizer = load_configured(config, path)
            check_same_tokenizer(tokenizer, reference_tokenizer)
            reference_scores[suffix] = {role: score_chunks(reference, chunks[role], batch_tokens=config.batch_tokens,
                                                           pad_id=pad, desc=f"reference{suffix} scoring {role}",
                                                           vocab_stats=False) for role in SETS}
            for role in SETS:
                reference_scores[suffix][role].save(run.scores_dir / f"reference{suffix}_{role}")
            del reference
        if "reference_victims" in needs:
            _add_reference_victims(config, chunks, tokenizer, inputs)
        for role, role_scores in scores.items():
            role_scores.save(run.scores_dir / role)

        params = {"min_k": config.min_k, "rmia_gamma": config.rmia_gamma, "rmia_a": config.rmia_a,
                  "rmia_offline": config.rmia_offline}
        sample_scores = {}
        for name in names:
            # the reference-model attack runs once per reference model, named reference_model<suffix>
            for suffix in (reference_scores if "reference" in attacks.get(name).needs else [""]):
                role_inputs = {role: replace(inputs[role], reference=reference_scores[suffix][role])
                               if suffix in reference_scores else inputs[role] for role in SETS}
                sample_scores[name + suffix] = {role: attacks.get(name)(role_inputs[role], **params) for role in SETS}
        results = {"model": config.model, "reference_model": config.reference_model,
                   "reference_models": config.reference_models,
                   **({"reference_victims": read_manifest(config.reference_victims)[0]} if "reference_victims" in needs
                      else {}),
                   "members": len(chunks["members"]), "nonmembers": len(chunks["nonmembers"]),
                   "attacks": {name: mia_metrics(s["members"], s["nonmembers"], resamples=config.bootstrap,
                                                 seed=config.seed) for name, s in sample_scores.items()}}
        if config.blind is not None:
            documents = [chunk.doc_id for role in SETS for chunk in chunks[role]]  # a document's chunks: one fold
            results["blind"] = blind_baseline(inputs["members"].texts, inputs["nonmembers"].texts,
                                              folds=config.blind.folds, permutations=config.blind.permutations,
                                              seed=config.seed, groups=documents)
            for metrics in results["attacks"].values():
                metrics["blind_verdict"] = blind_verdict(metrics["auc"], metrics.get("ci95", {}).get("auc"),
                                                         results["blind"])
        if "reference_victims" in needs:
            rmia = {k: params[k] for k in ("rmia_gamma", "rmia_a", "rmia_offline")} if "rmia" in names else None
            write_json(run.scores_dir / "per_example.json", per_example_parameters(
                inputs, {role: [c.doc_id for c in chunks[role]] for role in SETS}, results["reference_victims"],
                rmia))
            results["per_example"] = {"references": len(results["reference_victims"]),
                                      "population": len(chunks["calibration"]) if rmia else 0,
                                      "note": per_example_note(len(chunks["nonmembers"]),
                                                               len(chunks["calibration"]) if rmia else 0)}
        _write_sample_scores(run.scores_dir / "attack_scores.jsonl", chunks, sample_scores)
        results["plots"] = [str(p.relative_to(out)) for p in plot_roc(sample_scores, out / "plots")]
        run.write_results(results)
    return results


def _add_reference_victims(config: MiaConfig, chunks: dict[str, list[Chunk]], tokenizer,
                           inputs: dict[str, AttackInputs]) -> None:
    """Score every set under each reference victim (one pass per model) and attach the scores with their keep
    masks, and the calibration records': RMIA's population samples, and what LiRA aligns each model by."""
    models, keep_by_record = read_manifest(config.reference_victims)
    roles = [*SETS, "calibration"]
    scores = {role: np.empty((len(models), len(chunks[role]))) for role in roles}
    for k, path in enumerate(models):
        reference, reference_tokenizer = load_configured(config, path)
        check_same_tokenizer(tokenizer, reference_tokenizer)
        for role in roles:
            scores[role][k] = -score_chunks(reference, chunks[role], batch_tokens=config.batch_tokens,
                                            pad_id=tokenizer.pad_token_id, desc=f"reference victim {k} scoring {role}",
                                            vocab_stats=False).sample_nll()
        del reference
    keep = {role: keep_of([c.doc_id for c in chunks[role]], keep_by_record) for role in roles}
    for role in SETS:
        inputs[role].reference_victims = ReferenceVictimScores(scores[role], keep[role], scores["calibration"],
                                                               keep["calibration"])


def per_example_note(nonmembers: int, population: int) -> str:
    """What the low-FPR numbers of the per-example attacks can mean with this many records."""
    notes = []
    if nonmembers < 1000:
        notes.append(f"with {nonmembers} non-members, TPR at 0.1% FPR is the TPR at zero false positives")
    if population and population < 1000:
        notes.append(f"RMIA counts {population} population samples, so its score ties at the top and its TPR at "
                     "low FPR means little: read its AUC")
    return "; ".join(notes)


def _write_sample_scores(path: Path, chunks: dict[str, list[Chunk]], sample_scores: dict) -> None:
    """One line per sample: its id, label and every attack's score (higher = more likely a member)."""
    with path.open("w") as handle:
        for role in SETS:
            for i, chunk in enumerate(chunks[role]):
                row = {"id": chunk.id, "set": role, "member": role == "members", "tokens": len(chunk)}
                row.update({name: float(s[role][i]) for name, s in sample_scores.items()})
                handle.write(json.dumps(row) + "\n")


def mia_table(results: dict) -> Table:
    """Each attack's AUC with its interval and TPR at low FPR; the blind baseline, when run, as the last row."""
    keys = [fpr_key(f) for f in MIA_FPRS]
    table = Table(["attack", "AUC (95% CI)", *(k.replace("tpr@", "TPR@").replace("fpr", " FPR") for k in keys)], [],
                  align="ll" + "r" * len(keys))
    for name, m in results["attacks"].items():
        ci = m.get("ci95", {}).get("auc")
        auc = f"{m['auc']:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")
        table.rows.append([name, auc, *(rate_text(m[k], fpr, results.get("nonmembers"))
                                        for k, fpr in zip(keys, MIA_FPRS, strict=True))])
    blind = results.get("blind")
    if blind:
        low, high = blind["ci95"]
        table.rows.append(["blind baseline (text only, no model)", f"{blind['auc']:.3f} (null {low:.3f}–{high:.3f})",
                           *("–" for _ in keys)])
        table.notes.append(blind_note(results))
    return table


def format_mia_table(results: dict) -> str:
    return mia_table(results).to_markdown()


def blind_note(results: dict) -> str:
    """The words that go with the blind baseline: whether the split itself gives membership away."""
    blind = results["blind"]
    if not is_separable(blind):
        return (f"Blind baseline: a text classifier cannot tell members from non-members (AUC {blind['auc']:.3f}, "
                f"inside its permutation null {blind['ci95'][0]:.3f}–{blind['ci95'][1]:.3f}): the attacks' AUCs "
                "measure the model.")
    weak = [name for name, m in results["attacks"].items() if m.get("blind_verdict")]
    where = ("below its permutation null (the split read backwards, as telling as above it)"
             if blind.get("below_null") else "above its permutation null")
    return (f"Blind baseline: a text classifier separates members from non-members without the model (AUC "
            f"{blind['auc']:.3f}, {where} {blind['ci95'][0]:.3f}–{blind['ci95'][1]:.3f}). "
            + (f"For {', '.join(weak)}: this split is separable without the model; the attack's AUC is not evidence "
               "of membership." if weak else "Every attack's AUC exceeds it beyond its interval."))


def load_sample_scores(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per attack and set, the saved per-sample scores: metrics and plots rebuild from these alone."""
    rows = [json.loads(line) for line in (run_dir / "scores" / "attack_scores.jsonl").read_text().splitlines()]
    names = [k for k in rows[0] if k not in ("id", "set", "member", "tokens")]
    return {name: {role: np.array([r[name] for r in rows if r["set"] == role]) for role in SETS} for name in names}

