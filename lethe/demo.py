"""`lethe demo`: both halves of the mission on one real pre-trained LLM, on a laptop CPU.

  R/data-unlearning, R/unlearning   Yao et al.: unlearn a forget set with GA+GD on in-domain data,
                                    forget vs approximate perplexity and Min-K% AUC before and after
  R/data-leakage, R/leakage         Rashid et al.: a benign and a poisoned release, each fine-tuned
                                    by the victim; MIA AUC, extraction and validation perplexity
  R/report.html, R/report.md        everything above, read back from the runs' saved files
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lethe.assets import build_assets
from lethe.config import AssetsConfig, DemoConfig
from lethe.data.build import build_data
from lethe.models import ALIASES
from lethe.runs import Run

log = logging.getLogger("lethe")
HEADLINE_ATTACKS = ("loss", "min_k", "reference_model")


def unlearning_summary(results: dict) -> dict:
    """Before/after rows of the unlearning half: perplexity per role, Min-K% AUC, approximate gap."""
    def row(metrics: dict) -> dict:
        return {"forget_ppl": metrics["ppl"]["forget"], "approximate_ppl": metrics["ppl"]["approximate"],
                "general_ppl": metrics["ppl"]["general"], "gap": metrics["approx_gap"]["log_ppl_ratio"],
                "mink_auc": metrics["mia"]["auc"]}

    return {"method": results["method"], "steps": results["train"]["steps"], "stopped": results["train"]["stopped"],
            "flops_vs_pretraining": results["cost"]["ratio_vs_pretrain"],
            "before": row(results["before"]), "after": row(results["after"])}


def leakage_summary(results: dict) -> dict:
    """One row per release × fine-tuning mode: headline MIA AUCs, secrets extracted, validation perplexity."""
    rows = {}
    for variant, modes in results["variants"].items():
        for mode, cell in modes.items():
            rows[f"{variant} / {mode}"] = {
                **{f"{attack}_auc": cell["mia"][attack]["auc"] for attack in HEADLINE_ATTACKS if attack in cell["mia"]},
                "nsr": cell["extraction"]["nsr"], "targets": cell["extraction"]["targets"],
                "val_ppl": cell["utility"]["val_ppl"]}
    return rows


def format_summary(summary: dict) -> str:
    u = summary["unlearning"]
    lines = [f"Unlearning ({u['method']}, {u['steps']} steps, stopped: {u['stopped']})",
             f"{'':<8}{'forget PPL':>12}{'approx PPL':>12}{'gap':>8}{'Min-K% AUC':>12}{'general PPL':>13}"]
    for when in ("before", "after"):
        r = u[when]
        lines.append(f"{when:<8}{r['forget_ppl']:>12.2f}{r['approximate_ppl']:>12.2f}{r['gap']:>8.3f}"
                     f"{r['mink_auc']:>12.3f}{r['general_ppl']:>13.2f}")
    lines += ["gap = log(forget PPL / approx PPL): 0 is where retraining without the forget set would land; "
              "AUC 0.5 = forget set indistinguishable from unseen code"]
    if u["flops_vs_pretraining"]:
        lines.append(f"unlearning cost {u['flops_vs_pretraining']:.1e}x less compute than pre-training (6·N·tokens)")
    lines += ["",
              "Leakage after the victim's fine-tuning (MIA AUC: member vs non-member PII records)",
              f"{'release / mode':<30}{'loss':>7}{'min_k':>7}{'ref.model':>10}{'NSR':>7}{'val PPL':>9}"]
    for name, r in summary["leakage"].items():
        aucs = "".join(f"{r.get(f'{a}_auc', float('nan')):>{w}.3f}" for a, w in zip(HEADLINE_ATTACKS, (7, 7, 10),
                                                                                       strict=True))
        lines.append(f"{name:<30}{aucs}{r['nsr']:>4}/{r['targets']:<2}{r['val_ppl']:>9.2f}")
    lines.append("NSR: secrets recovered exactly by greedy decoding from their prefix")
    return "\n".join(lines)


def _unlearning_half(config: DemoConfig, root: Path) -> dict:
    from lethe.unlearning.run import unlearn

    print(f"[1/2] unlearning: {config.unlearn.method} on {config.model}")
    data = root / "data-unlearning"
    build_data(config.unlearning_data.model_copy(update={"out": data}))
    return unlearn(config.unlearn.model_copy(update={"data": data}), root / "unlearning")


def _leakage_half(config: DemoConfig, root: Path) -> dict:
    from lethe.leakage.study import run_leakage

    print(f"[2/2] leakage: {' vs '.join(config.leakage.variants)} releases, the victim fine-tunes with "
          f"{', '.join(config.leakage.modes)}")
    data = root / "data-leakage"
    build_data(config.leakage_data.model_copy(update={"out": data}))
    return run_leakage(config.leakage.model_copy(update={"data": data}), root / "leakage")


def run_demo(config: DemoConfig, out: Path, *, overwrite: bool = False) -> dict:
    from lethe.reporting import write_report

    started = time.time()
    with Run.start(out, "demo", config, overwrite=overwrite) as run:
        build_assets(AssetsConfig(model=config.model in ALIASES))
        halves, seconds = {}, {}
        for name, half in (("unlearning", _unlearning_half), ("leakage", _leakage_half)):
            begin = time.time()
            halves[name] = half(config, run.path)
            seconds[name] = round(time.time() - begin, 1)
            log.info("demo: %s half done in %.0f s", name, seconds[name])
        summary = {"unlearning": unlearning_summary(halves["unlearning"]),
                   "leakage": leakage_summary(halves["leakage"])}
        results = {"model": config.model, **summary, "seconds": {**seconds, "total": round(time.time() - started, 1)},
                   "runs": {"unlearning": "unlearning", "leakage": "leakage"}}
        (run.path / "summary.txt").write_text(format_summary(summary) + "\n")
        run.write_results(results)
    report = write_report([run.path], run.path)
    print("\n" + format_summary(summary))
    print(f"\ndemo finished in {results['seconds']['total']:.0f} s; report: {report}\neverything is in {run.path}")
    return results
