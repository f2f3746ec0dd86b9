"""The per-example unlearning MIA (U-LiRA; Hayes et al., 2024, "Inexact unlearning needs more careful evaluations
to avoid a false sense of privacy").

Population attacks (Min-K%) ask whether the forget set as a whole looks unseen. This one asks it of each document,
calibrated on shadow models (lethe/unlearning/shadows.py): per candidate document (the domain's forget and
approximate documents), the scores it gets from the shadows that saw it and were then unlearned with the method
under test (IN) and from those that never saw it (OUT), fitted with LiRA's Gaussians (lethe/attacks/per_example.py)
on the per-document mean token log-likelihood. The target is the unlearned model; members are the forget documents,
non-members the approximate ones, so the exact retrain, which saw neither, sits at chance. The original model and
the retrain are attacked with the shadows as trained (IN = seen): the original row shows what the attack finds
where nothing was unlearned.

Per model: `auc` and `tpr@1%fpr` of LiRA online over forget vs approximate documents (`ci95`, `tpr_ci95`:
bootstrap intervals), `offline_auc`, and `detected_share`: the share of forget documents whose own test rejects at
1% FPR (`lira_online_pvalue` < 0.01: a model that never saw the document would score it so IN-like in under 1%
of cases; `approximate_detected_share` is the same for the non-members, about 0.01 when the Gaussians fit); per
method, `auc_minus_retrain`, the paired difference to the retrain's AUC on the same documents. Everything a score
is rebuilt from is saved in <where>/attack/<model>.json.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from lethe.attacks.metrics import bootstrap_intervals, paired_auc_difference, roc_metrics
from lethe.attacks.per_example import lira_offline, lira_online, lira_online_pvalue
from lethe.config import EvalUnlearningConfig, UnlearnConfig, UnlearningStudyConfig, UnlearnSettings, read_yaml
from lethe.data.chunking import document_of
from lethe.errors import LetheError, TrainingDiverged
from lethe.runs import write_json
from lethe.scoring import TokenScores
from lethe.unlearning.shadows import Shadows, known_origin, train_shadows

log = logging.getLogger("lethe")

FPR = 0.01


def document_scores(scores: list[TokenScores], records: list[str]) -> np.ndarray:
    """Per record (a document id), the mean log-likelihood of all predicted tokens of its chunks."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for split in scores:
        totals = np.add.reduceat(split.logprob.astype(np.float64), split.offsets[:-1])
        for chunk_id, total, length in zip(split.ids, totals, split.lengths, strict=True):
            document = document_of(chunk_id)
            sums[document] += float(total)
            counts[document] += int(length)
    if missing := [record for record in records if not counts.get(record)]:
        raise LetheError(f"{len(missing)} candidate documents have no scored tokens (e.g. {missing[0]})")
    return np.array([sums[record] / counts[record] for record in records])


def attack(target: np.ndarray, references: np.ndarray, keep: np.ndarray, members: np.ndarray,
           seed: int) -> tuple[dict, dict]:
    """LiRA online and offline on one target: (the numbers reported, everything they are rebuilt from)."""
    online, offline = lira_online(target, references, keep), lira_offline(target, references, keep)
    pvalue = lira_online_pvalue(target, online.mu_in, online.sigma_in, online.mu_out, online.sigma_out)
    inside, outside = online.scores[members], online.scores[~members]
    roc = roc_metrics(inside, outside, fprs=(FPR,))
    intervals = bootstrap_intervals(inside, outside, fprs=(FPR,), seed=seed)
    summary = {"auc": roc["auc"], "tpr@1%fpr": roc["tpr@1%fpr"], "ci95": intervals["auc"],
               "tpr_ci95": intervals["tpr@1%fpr"], "detected_share": float((pvalue[members] < FPR).mean()),
               "approximate_detected_share": float((pvalue[~members] < FPR).mean()),
               "offline_auc": roc_metrics(offline.scores[members], offline.scores[~members], fprs=())["auc"],
               "shadows": len(references), "forget_documents": int(members.sum()),
               "approximate_documents": int((~members).sum())}
    saved = {"score": "mean token log-likelihood of the document", "member": members.tolist(),
             "target": target.tolist(), "references": references.tolist(), "keep": keep.tolist(),
             "lira_online": {"global_variance": online.global_variance, **online.parameters(),
                             "scores": online.scores.tolist(), "pvalue": pvalue.tolist()},
             "lira_offline": {"global_variance": offline.global_variance, **offline.parameters(),
                              "scores": offline.scores.tolist()}}
    return summary, saved


def u_mia_results(shadows: Shadows, targets: dict[str, dict[str, TokenScores]], cells: dict[str, UnlearnConfig],
                  pretrain_tokens: float | None, seed: int) -> dict[str, dict]:
    """Per model, the attack's numbers. `targets`: each model's role scores, by name; a model named in `cells` was
    unlearned with that cell's settings (its shadows are unlearned alike), the others are attacked with the
    shadows as trained. Written to <where>/attack/<model>.json and <where>/results.json."""
    results, online = {}, {}
    trained = None
    for who, roles in targets.items():
        target = document_scores([roles["forget"], roles["approximate"]], shadows.records)
        try:
            if who in cells:
                shadow_scores = shadows.unlearned_scores(who, cells[who], pretrain_tokens)
            else:
                shadow_scores = trained = trained or shadows.trained_scores()
        except TrainingDiverged as exc:
            log.warning("u_mia of %s skipped: %s", who, exc)
            results[who] = {"skipped": f"a shadow diverged: {exc}"}
            continue
        references = np.stack([document_scores([scores], shadows.records) for scores in shadow_scores])
        results[who], saved = attack(target, references, shadows.keep, shadows.members, seed)
        saved |= {"records": shadows.records,
                  "shadows": "unlearned/" + who if who in cells else "shadows (as trained)"}
        write_json(shadows.where / "attack" / f"{who}.json", saved)
        online[who] = np.asarray(saved["lira_online"]["scores"])
    if "retrained" in online:
        members = shadows.members
        for who in cells:
            if who in online:
                paired = paired_auc_difference(online[who][members], online[who][~members],
                                               online["retrained"][members], online["retrained"][~members], seed=seed)
                results[who]["auc_minus_retrain"] = {"difference": paired["delta_auc"], "ci95": paired["ci95"]}
    write_json(shadows.where / "results.json", results)
    return results


def loading(settings: UnlearnSettings) -> dict:
    return {"dtype": settings.dtype, "trust_remote_code": settings.trust_remote_code,
            "allow_cpu_bf16": settings.allow_cpu_bf16}


def shadow_budget(model: str, configured: float | None) -> float | None:
    """The pre-training tokens of the target's own unlearning runs, which the shadows' runs share (methods such as
    undo size their budget by them; a shadow's own training is no pre-training record)."""
    from lethe.unlearning.run import pretrain_record

    record = pretrain_record(model, configured)
    return record.get("tokens") if record else None


def unlearning_run(model: str) -> UnlearnConfig:
    """The settings of the `lethe unlearn` run that made `model`: the shadows are unlearned with them."""
    from lethe.models import resolve_model_path
    from lethe.runs import read_json

    run_dir = resolve_model_path(model).parent
    if not (run_dir / "run.json").is_file() or read_json(run_dir / "run.json").get("command") != "unlearn":
        raise LetheError(f"u_mia needs --model from a `lethe unlearn` run (its method and settings unlearn the "
                         f"shadows), not {model}")
    cell = UnlearnConfig.model_validate(read_yaml(run_dir / "config.yaml"))
    known_origin(cell.model)
    return cell


def eval_u_mia(config: EvalUnlearningConfig, cell: UnlearnConfig, scores: dict[str, dict[str, TokenScores]],
               out: Path) -> dict[str, dict]:
    """`lethe eval unlearning`: the unlearned model (its run's method unlearns the shadows), and the original and
    retrained models when given, with shadows trained under out/u_mia."""
    if cell.domain != config.domain:
        raise LetheError(f"the model unlearned {cell.domain}'s forget set, but domain is {config.domain}")
    shadows = train_shadows(cell.model, config.data, config.domain, config.u_mia, out / "u_mia", config.chunk,
                            config.eval.batch_tokens, loading(cell))
    return u_mia_results(shadows, scores, {"unlearned": cell}, shadow_budget(cell.model, cell.pretrain_tokens),
                         config.u_mia.seed)


def study_u_mia(config: UnlearningStudyConfig, domain: str, out: Path, scores: dict[str, dict[str, TokenScores]],
                cells: dict[str, UnlearnConfig]) -> dict[str, dict]:
    """The study's rows of one domain: every method that did not diverge, the original and the retrain; the
    shadows (out/u_mia/<domain>/shadows) are trained once and unlearned by each method."""
    shadows = train_shadows(config.model, config.data, domain, config.u_mia, out / "u_mia" / domain,
                            config.unlearn.chunk, config.unlearn.eval.batch_tokens, loading(config.unlearn))
    return u_mia_results(shadows, scores, cells, shadow_budget(config.model, config.unlearn.pretrain_tokens),
                         config.u_mia.seed)
