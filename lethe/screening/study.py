"""The leakage study's screening step: each release screened by its victim before fine-tuning on it.

The victim's private records are the PII records of its D_ft (targets_member.jsonl: D_ft's filler documents are
another kind of text, which held-out PII records cannot calibrate); its held-out records are the generator's
calibration records, which no release saw; its trusted model is the clean pre-trained one.
"""

from __future__ import annotations

from pathlib import Path

from lethe.config import ScreenConfig
from lethe.data.documents import read_documents
from lethe.screening.statistics import MIN_HELD_OUT, MIN_PRIVATE

KEPT = ("verdict", "p_value", "anomalous", "targeted_share", "flagged", "private", "held_out", "held_out_shift",
        "identical_to_trusted")


def screen_release(study, variant: str) -> dict:
    """`lethe screen` of one release (a run under <seed>/screen/<variant>), or why it was not screened."""
    from lethe.leakage.study import step
    from lethe.screening.run import run_screen

    private, held_out = study.pii / "targets_member.jsonl", study.pii / "calibration.jsonl"
    sizes = {"private": len(read_documents(private)), "held_out": len(read_documents(held_out))}
    if sizes["private"] < MIN_PRIVATE or sizes["held_out"] < MIN_HELD_OUT:
        return {"skipped": f"{sizes['private']} private and {sizes['held_out']} held-out records: screening needs "
                           f"at least {MIN_PRIVATE} and {MIN_HELD_OUT}"}
    config = ScreenConfig(model=str(study.root / "released" / variant / "model"), private=str(private),
                          held_out=str(held_out), trusted=study.config.model, data=study.config.data,
                          **{"seed": study.seed, **study.config.screen})
    results = step(Path(study.root / "screen" / variant), study.resume,
                   lambda out: run_screen(config, out, overwrite=True))
    return {key: results.get(key) for key in KEPT} | {
        "alone": {key: results["statistics"]["release"][key] for key in ("p_value", "anomalous", "median_shift")}}
