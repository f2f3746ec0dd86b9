"""`lethe finetune`: the victim's fine-tuning of a released model on private data (full, LoRA, head; DP-SGD)."""

from __future__ import annotations

from lethe.config import FinetuneConfig
from lethe.recipes import DATA, Flag, lazy, recipe
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt, key_values


def summary(results: dict, config: FinetuneConfig, out) -> None:
    ppl, params, train = results["utility"]["val_ppl"], results["parameters"], results["train"]
    print(f"{results['mode']} fine-tuning of {params['trainable']:,} of {params['total']:,} parameters: "
          f"{train['steps']} steps, {train['tokens']:,} tokens in {train['seconds']:.0f} s")
    data = results.get("data_ppl")
    print(f"validation perplexity {ppl['before']:.2f} -> {ppl['after']:.2f}"
          + (f"; D_ft perplexity {data['before']:.2f} -> {data['after']:.2f}" if data else ""))
    if results["dp"]:
        dp = results["dp"]
        print(f"DP-SGD: ε = {dp['epsilon']:.3f} (target {dp['target_epsilon']:g}) at δ = {dp['delta']:g}, "
              f"noise multiplier {dp['noise_multiplier']:.3f}, clipping norm {dp['max_grad_norm']:g}")
    print(f"model saved to {results['path']}")


def report(record: RunRecord, section: Section) -> None:
    r = record.results
    val = r["utility"]["val_ppl"]
    section.headline = (f"{r['mode']}{' + DP' if r['dp'] else ''}: validation PPL {val['before']:.2f} → "
                        f"{val['after']:.2f}")
    rows = [["validation", fmt(val["before"]), fmt(val["after"])]]
    if "data_ppl" in r:
        rows.append(["fine-tuning data", fmt(r["data_ppl"]["before"]), fmt(r["data_ppl"]["after"])])
    section.tables.append(Table(["perplexity", "before", "after"], rows,
                                f"{r['mode']} fine-tuning of {r['parameters']['trainable']:,} of "
                                f"{r['parameters']['total']:,} parameters"))
    if r["dp"]:
        section.tables.append(key_values(r["dp"], "DP-SGD (Opacus accounting)"))


recipe(command="finetune", help="the victim's fine-tuning of a released model on private data (full, LoRA, head; "
       "optionally DP-SGD)", schema=FinetuneConfig, run=lazy("lethe.training.finetune", "finetune"),
       flags={"model": Flag("the released model"),
              "data": Flag("D_ft: a split of --data-dir or a JSONL/text/parquet file"),
              "validation": Flag("held-out documents for validation perplexity (split or file)"),
              "mode": Flag("full (default), lora or head"), "data_dir": Flag(DATA)},
       summary=summary, report=report, multi_process=True)
