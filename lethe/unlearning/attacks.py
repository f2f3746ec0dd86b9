"""The attacks on unlearning, run on any model of one domain's roles: quantization, relearning and verbatim
memorisation. Each model's raw outcome (the quantized models' per-token scores, the relearning curves, the
verbatim scores) is saved under its own directory and read back when it is there, so a study that resumes
never attacks a model twice; the numbers that compare models are computed afterwards from those files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lethe.config import UnlearnEvalConfig, UnlearningAttacks
from lethe.data.roles import RunData
from lethe.runs import read_json, write_json
from lethe.scoring import TokenScores
from lethe.unlearning.evaluation import load_role_scores, log_ppl_ratio, membership, score_roles


@dataclass
class ModelAttacks:
    """What the attacks saw of one model."""

    quantized: dict[int, dict[str, TokenScores]]  # bits → role → scores of the quantized model
    curves: dict[str, list[dict]]  # relearning mode → the held-out forget set measured after each step count
    verbmem: dict | None  # mean ROUGE-L of the forget set's continuations, and how many chunks


def attack_model(model, tokenizer, data: RunData, scores: dict[str, TokenScores], attacks: UnlearningAttacks,
                 evaluation: UnlearnEvalConfig, out: Path) -> ModelAttacks:
    """Every configured attack on `model` (whose role `scores` are already taken), saved under `out`."""
    from lethe.attacks.quantization import quantize_model
    from lethe.attacks.relearning import relearning_curves
    from lethe.attacks.verbatim import verbatim_memorisation

    for bits in attacks.quantize:
        score_roles(quantize_model(model, bits, attacks.quantize_group), tokenizer, data, evaluation.batch_tokens,
                    out / f"int{bits}")
    curves = relearning_curves(model, tokenizer, data, scores, attacks.relearn, evaluation) if attacks.relearn else {}
    verbmem = None
    if attacks.verbmem is not None:
        verbmem = verbatim_memorisation(model, tokenizer, data.role_chunks("forget"), attacks.verbmem)
        write_json(out / "verbmem.json", verbmem.pop("per_chunk"))
    write_json(out / "attacks.json", {"quantize": attacks.quantize, "curves": curves, "verbmem": verbmem})
    return load_attacks(out, data.domain)


def load_attacks(out: Path, domain: str) -> ModelAttacks:
    saved = read_json(out / "attacks.json")
    return ModelAttacks({bits: load_role_scores(out / f"int{bits}", domain) for bits in saved["quantize"]},
                        saved["curves"], saved["verbmem"])


def quantization_attack(scores: dict[str, dict[str, TokenScores]], quantized: dict[str, dict[int, dict]],
                        evaluation: UnlearnEvalConfig) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and bit width: forget perplexity, gap and Min-K% AUC of the quantized model; its forget perplexity
    over the equally quantized retrain's; and for every model but the original, `forgetting_kept`, the share of its
    forgetting (the rise of log forget perplexity over the original's) that survives when both are quantized."""
    k = str(evaluation.headline_k)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for who, by_bits in quantized.items():
        for bits, q in by_bits.items():
            row = {"forget_ppl": q["forget"].perplexity(),
                   "approx_gap": log_ppl_ratio(q["forget"], q["approximate"]),
                   "mia_auc": membership(q["forget"], q["approximate"], evaluation)[k]["auc"]}
            if "retrained" in quantized:
                row["forget_ppl_ratio"] = row["forget_ppl"] / quantized["retrained"][bits]["forget"].perplexity()
            if who != "original" and "original" in quantized:
                forgotten = math.log(scores[who]["forget"].perplexity() / scores["original"]["forget"].perplexity())
                kept = math.log(row["forget_ppl"] / quantized["original"][bits]["forget"].perplexity())
                row["forgetting_kept"] = kept / forgotten if forgotten else None  # JSON has no NaN
            out.setdefault(who, {})[f"int{bits}"] = row
    return out


def attack_results(scores: dict[str, dict[str, TokenScores]], attacked: dict[str, ModelAttacks],
                   attacks: UnlearningAttacks, evaluation: UnlearnEvalConfig) -> dict[str, dict]:
    """Per model (`original`, `retrained` and any unlearned one, by name): `quantized`, `relearn` and `verbmem`,
    each compared with the original and the retrain wherever they were attacked too."""
    from lethe.attacks.relearning import recovery

    results: dict[str, dict] = {who: {} for who in attacked}
    quantized = {who: a.quantized for who, a in attacked.items() if a.quantized}
    for who, rows in quantization_attack(scores, quantized, evaluation).items():
        results[who]["quantized"] = rows
    curves = {who: a.curves for who, a in attacked.items() if a.curves}
    if curves:
        for who, modes in recovery(curves, max(attacks.relearn.steps)).items():
            results[who]["relearn"] = {mode: {**row, "curve": curves[who][mode]} for mode, row in modes.items()}
    for who, a in attacked.items():
        if a.verbmem is not None:
            results[who]["verbmem"] = a.verbmem
    return results

