"""`lethe experiment calibrate`: the leakage study's victim (learning rate × epochs), chosen on a seed of its own."""

from __future__ import annotations

from lethe.config import LeakageConfig
from lethe.recipes import STUDY_RESUME, lazy, recipe
from lethe.recipes.experiment_leakage import LEAKAGE_FLAGS
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt


def summary(results: dict, config: LeakageConfig, out) -> None:
    from lethe.leakage.calibration import format_calibration

    print(format_calibration(results))


def report(record: RunRecord, section: Section) -> None:
    r = record.results
    chosen, (low, high) = r["chosen"], r["target"]
    section.headline = (f"victim: lr {chosen['lr']:g} × {chosen['epochs']:g} epochs, baseline loss AUC "
                        f"{chosen['loss_auc']:.3f} (wanted {low}–{high})")
    section.tables.append(Table(["lr", "epochs", "loss AUC", "validation PPL", "chosen"],
                                [[f"{c['lr']:g}", f"{c['epochs']:g}", fmt(c["loss_auc"]), fmt(c["val_ppl"]),
                                  "yes" if c == chosen else ""] for c in r["grid"]],
                                f"{r['mode']} fine-tuning of the {r['baseline']} release on calibration seed "
                                f"{r['seed']}"))


recipe(command="experiment calibrate", help="the leakage study's victim: learning rate × epochs on a seed of its "
       "own, from the baseline release", schema=LeakageConfig,
       run=lazy("lethe.leakage.calibration", "calibrate_victim"),
       flags=LEAKAGE_FLAGS, switches=STUDY_RESUME, summary=summary, report=report, summarises_children=True)
