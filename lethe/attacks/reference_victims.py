"""Reference victims for LiRA and RMIA: the manifest that lists them, and the per-record parameters a run saves.

A manifest (`references.json`, written by the leakage study or by hand) names K models, each fine-tuned
from the same release on the victim's recipe with a random half of the candidate records, and says which
records each saw:

    {"models": ["refs/ref-0/model", ...], "records": ["rec-0001", ...], "keep": [[true, false, ...], ...]}

`keep[k][n]` is True where model k trained on record n. Records are matched to the attack's samples by
document id (each target is one sample).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lethe.attacks.membership import AttackInputs, ReferenceVictimScores, aligned_scores, loss_score, rmia_fit
from lethe.attacks.per_example import lira_offline, lira_online
from lethe.errors import LetheError
from lethe.runs import read_json, write_json


def write_manifest(path: Path, models: list[str], records: list[str], keep: np.ndarray) -> None:
    if keep.shape != (len(models), len(records)):
        raise LetheError(f"keep {keep.shape} must be (models, records) = ({len(models)}, {len(records)})")
    write_json(path, {"models": models, "records": records, "keep": keep.tolist()})


def read_manifest(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """The models (relative paths resolved against the manifest's folder) and, per record id, its (K,) keep."""
    path = Path(path)
    if not path.is_file():
        raise LetheError(f"reference_victims {path} is not a file (a references.json listing the reference victims)")
    manifest = read_json(path)
    missing = {"models", "records", "keep"} - set(manifest)
    if missing:
        raise LetheError(f"reference_victims {path} lacks {', '.join(sorted(missing))}")
    keep = np.asarray(manifest["keep"], dtype=bool)
    if keep.shape != (len(manifest["models"]), len(manifest["records"])):
        raise LetheError(f"reference_victims {path}: keep is {keep.shape}, not (models, records)")
    models = [str(model if Path(model).is_absolute() else path.parent / model) for model in manifest["models"]]
    return models, dict(zip(manifest["records"], keep.T, strict=True))


def keep_of(record_ids: list[str], keep_by_record: dict[str, np.ndarray]) -> np.ndarray:
    """(K, n) keep mask of these records, refusing one the manifest does not know."""
    unknown = [record for record in record_ids if record not in keep_by_record]
    if unknown:
        raise LetheError(f"{len(unknown)} records are not in the reference victims' manifest (e.g. {unknown[0]}): "
                         "they must be candidates the references were dealt")
    return np.stack([keep_by_record[record] for record in record_ids], axis=1)


def per_example_parameters(inputs: dict[str, AttackInputs], record_ids: dict[str, list[str]], models: list[str],
                           rmia_params: dict | None) -> dict:
    """Everything a per-example score is rebuilt from: per set, the records, the target's and every reference
    victim's score, the keep mask, and each attack's fitted per-record parameters."""
    any_set = next(iter(inputs.values()))  # every set shares the population and so each model's offset
    saved: dict = {"models": models, "score": "mean token log-likelihood", "offsets": aligned_scores(any_set)[2],
                   "population": {"target": (-any_set.calibration_nll).tolist(),
                                  "references": any_set.reference_victims.population.tolist(),
                                  "keep": any_set.reference_victims.population_keep.tolist()}, "sets": {}}
    for role, role_inputs in inputs.items():
        victims: ReferenceVictimScores = role_inputs.reference_victims
        # LiRA's parameters are of the aligned scores: the saved raw score minus its model's offset
        target, references, _ = aligned_scores(role_inputs)
        online, offline = lira_online(target, references, victims.keep), lira_offline(target, references, victims.keep)
        entry = {"records": record_ids[role], "target": loss_score(role_inputs.target).tolist(),
                 "references": victims.scores.tolist(), "keep": victims.keep.tolist(),
                 "lira_online": {"global_variance": online.global_variance, **online.parameters()},
                 "lira_offline": {"global_variance": offline.global_variance, **offline.parameters()}}
        if rmia_params is not None:
            fit = rmia_fit(role_inputs, **rmia_params)
            entry["rmia"] = {**rmia_params, **fit.parameters()}
            saved["population"]["log_ratio"] = fit.population_log_ratio.tolist()
        saved["sets"][role] = entry
    return saved
