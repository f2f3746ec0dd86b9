"""`lethe experiment calibrate-extraction`: the extraction's working point (member copies × epochs), on a seed of
its own, from the baseline release."""

from __future__ import annotations

from lethe.config import LeakageConfig
from lethe.recipes import STUDY_RESUME, lazy, recipe
from lethe.recipes.experiment_leakage import LEAKAGE_FLAGS
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import saved_figures


def summary(results: dict, config: LeakageConfig, out) -> None:
    from lethe.leakage.extraction_calibration import format_extraction_calibration

    print(format_extraction_calibration(results))
    print(f"dose-response plot: {out}/dose_response.png; per-secret rows: {out}/secrets.jsonl")


def report(record: RunRecord, section: Section) -> None:
    r = record.results
    chosen, (low, high) = r["chosen"], r["target"]
    m = chosen["members"]
    section.headline = (f"extraction working point: {chosen['copies']} copies × {chosen['epochs']:g} epochs, member "
                        f"NSR {m['nsr']}/{m['secrets']} (wanted {low:.0%}–{high:.0%})"
                        + ("" if r["in_range"] else ", outside the wanted range"))
    exposure = lambda side: "/".join("–" if side.get(key) is None else f"{side[key]:.2f}"  # noqa: E731
                                     for key in ("exposure", "exposure_skewnorm"))
    section.tables.append(Table(
        ["copies", "epochs", "member NSR", "95% interval", "member exposure", "non-member NSR",
         "non-member exposure", "validation PPL", "chosen"],
        [[str(c["copies"]), f"{c['epochs']:g}", f"{c['members']['nsr']}/{c['members']['secrets']}",
          f"{c['members']['ci95'][0]:.3f}–{c['members']['ci95'][1]:.3f}", exposure(c["members"]),
          f"{c['nonmembers']['nsr']}/{c['nonmembers']['secrets']}", exposure(c["nonmembers"]),
          f"{c['val_ppl']:.2f}", "yes" if c == chosen else ""] for c in r["grid"]],
        f"greedy extraction after {r['mode']} fine-tuning of the {r['baseline']} release on calibration seed "
        f"{r['seed']}: the dose-response (exposure as sampled, capped at log2 of the candidates + 1 / its skew-normal "
        "extrapolation)"))
    saved_figures(record, section, r.get("plots") or [], "the dose-response")


recipe(command="experiment calibrate-extraction", help="the extraction's working point: member copies × epochs on a "
       "seed of its own, from the baseline release, with the dose-response", schema=LeakageConfig,
       run=lazy("lethe.leakage.extraction_calibration", "calibrate_extraction"),
       api_name="experiment_calibrate_extraction", flags=LEAKAGE_FLAGS, switches=STUDY_RESUME, summary=summary,
       report=report, summarises_children=True)
