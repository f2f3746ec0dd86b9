"""`lethe screen`: check a release against the victim's own data before fine-tuning on it."""

from __future__ import annotations

from lethe.config import ScreenConfig
from lethe.recipes import DATA, Flag, lazy, recipe
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt

SHOWN_FLAGGED = 10


def summary(results: dict, config: ScreenConfig, out) -> None:
    print(results["verdict"])
    for name, s in results["statistics"].items():
        print(f"  {name:<11} p = {s['p_value']:.3g}  rank-sum p = {s['tests']['rank_sum']['p_value']:.3g}  "
              f"tail p = {s['tests']['tail']['p_value']:.3g}  flagged {s['flagged']}/{s['private']}  "
              f"median shift {s['median_shift']:+.3f}  share ≈ {s['targeted_share']:.0%}")
    if results.get("held_out_shift") is not None:
        print(f"the release moved the held-out records by {results['held_out_shift']:+.3f} nats (median, against "
              "the trusted model): a change to this kind of data as a whole, which no test here calibrates")
    if results.get("identical_to_trusted"):
        print("the release scores every record as the trusted model does: nothing was changed")
    if results["flagged_ids"]:
        shown = results["flagged_ids"][:SHOWN_FLAGGED]
        print(f"flagged: {', '.join(shown)}" + (" ..." if len(results["flagged_ids"]) > len(shown) else ""))
    print(f"per-record scores in {out}/scores/screen.jsonl, plots in {out}/plots")


def report(record: RunRecord, section: Section) -> None:
    from lethe.reporting.plots import saved_png

    r = record.results
    section.headline = r["verdict"]
    rows = [[name, fmt(s["p_value"]), fmt(s["tests"]["rank_sum"]["p_value"]), fmt(s["tests"]["tail"]["p_value"]),
             f"{s['flagged']} ({s['lowered']} lowered, {s['raised']} raised)", fmt(s["median_shift"]),
             f"{s['targeted_share']:.0%}"] for name, s in r["statistics"].items()]
    section.tables.append(Table(["statistic", "p", "rank-sum p", "tail p", "flagged", "median shift (nats)",
                                 "targeted share"], rows,
                                f"{r['private']} private vs {r['held_out']} held-out records; release {r['model']}"
                                + (f", trusted {r['trusted']}" if r["trusted"] else "")))
    if r.get("held_out_shift") is not None:
        section.notes.append(f"held-out records moved {r['held_out_shift']:+.3f} nats (median release − trusted): "
                             "a change to this kind of data as a whole, not calibrated by any test here")
    if r["flagged_ids"]:
        section.notes.append("flagged records: " + ", ".join(r["flagged_ids"][:SHOWN_FLAGGED])
                             + (f" and {len(r['flagged_ids']) - SHOWN_FLAGGED} more"
                                if len(r["flagged_ids"]) > SHOWN_FLAGGED else ""))
    section.figures += [f for p in r.get("plots", []) if (f := saved_png(record.path / p, f"{p}: private vs "
                                                                         "held-out records"))]


recipe(command="screen", help="check a release against your own data before fine-tuning on it (targeted records?)",
       schema=ScreenConfig, run=lazy("lethe.screening.run", "run_screen"),
       flags={"model": Flag("the release to screen"),
              "data": Flag("the private records (split or JSONL/text/parquet file)", key="private"),
              "held_out": Flag("held-out records of the same kind, never given to the releaser (split or file)"),
              "trusted": Flag("a trusted model of the same tokenizer (e.g. the public checkpoint)"),
              "data_dir": Flag(DATA, key="data")},
       summary=summary, report=report)
