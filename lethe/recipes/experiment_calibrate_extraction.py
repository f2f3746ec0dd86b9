"""`lethe experiment calibrate-extraction`: the extraction's working point (member copies × epochs), on a seed of
its own, from the baseline release."""

from __future__ import annotations

from lethe.config import LeakageConfig
from lethe.recipes import STUDY_RESUME, lazy, recipe
from lethe.recipes.experiment_leakage import LEAKAGE_FLAGS
from lethe.reporting.document import Section
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import saved_figures


def summary(results: dict, config: LeakageConfig, out) -> None:
    from lethe.leakage.extraction_calibration import dose_response_table, working_point

    print(dose_response_table(results).to_terminal() + "\n" + working_point(results))
    print(f"dose-response plot: {out}/dose_response.png; per-secret rows: {out}/secrets.jsonl")


def report(record: RunRecord, section: Section) -> None:
    from lethe.leakage.extraction_calibration import dose_response_table, working_point

    section.headline = working_point(record.results)
    section.tables.append(dose_response_table(record.results))
    saved_figures(record, section, record.results.get("plots") or [], "the dose-response")


recipe(command="experiment calibrate-extraction", help="the extraction's working point: member copies × epochs on a "
       "seed of its own, from the baseline release, with the dose-response", schema=LeakageConfig,
       run=lazy("lethe.leakage.extraction_calibration", "calibrate_extraction"),
       api_name="experiment_calibrate_extraction", flags=LEAKAGE_FLAGS, switches=STUDY_RESUME, summary=summary,
       report=report, summarises_children=True)
