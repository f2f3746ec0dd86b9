"""`lethe poison`: release a model that makes later fine-tuning on the targets leak more (or a baseline release)."""

from __future__ import annotations

from lethe.config import PoisonConfig
from lethe.recipes import DATA, Flag, lazy, recipe
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt, key_values


def summary(results: dict, config: PoisonConfig, out) -> None:
    loss, bound, train = results["loss"], results["bound"], results["train"]
    print(f"{results['variant']}: target loss {loss['before']['targets']:.3f} -> {loss['after']['targets']:.3f}, "
          f"reference loss {loss['before']['reference']:.3f} -> {loss['after']['reference']:.3f} "
          f"(bound {bound['limit']:.3f})")
    if train:
        detail = (f" ({train['ascent_steps']} ascent, {train['projection_steps']} projection)"
                  if train.get("projection_steps") else "")
        print(f"{train['steps']} steps kept{detail}, stopped: {train['stopped']}")
    print(f"released model saved to {results['path']}")


def report(record: RunRecord, section: Section) -> None:
    r = record.results
    loss, bound, utility = r["loss"], r["bound"], r["utility"]
    section.headline = (f"{r['variant']}: target loss {loss['before']['targets']:.3f} → "
                        f"{loss['after']['targets']:.3f}, reference PPL ×{utility['ratio']:.3f}")
    section.tables.append(Table(["loss", "before", "after"],
                                [[k, fmt(loss["before"][k]), fmt(loss["after"][k])] for k in loss["before"]],
                                f"{r['variant']}: {r['targets']} target chunks, {r['reference_chunks']} reference"))
    section.tables.append(key_values({"reference PPL before": utility["reference_ppl_before"],
                                      "reference PPL after": utility["reference_ppl_after"],
                                      **{f"bound: {k}": v for k, v in bound.items()},
                                      **({"steps": r["train"]["steps"], "stopped": r["train"]["stopped"]}
                                         if r["train"] else {})}, "utility bound"))


recipe(command="poison", help="release a model that makes later fine-tuning on the targets leak more",
       schema=PoisonConfig, run=lazy("lethe.poisoning.poison", "poison"),
       flags={"model": Flag("the clean pre-trained model"), "targets": Flag("the target records (split or file)"),
              "reference": Flag("D*: generic reference data for the utility bound (split or file)"),
              "variant": Flag("forget_to_flourish (default), benign, precurious or privacy_backdoor"),
              "data": Flag(DATA)},
       summary=summary, report=report, multi_process=True)
