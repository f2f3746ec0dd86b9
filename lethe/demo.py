"""`lethe demo`: both halves of the mission on one real pre-trained LLM, on a laptop CPU.

  R/data-unlearning, R/target,      Yao et al., with membership made known: the model trained on forget +
  R/unlearning                      retain (the target) and on retain alone (its exact retrain); GA+GD
                                    unlearns the forget set from the target, stopped by the approximate
                                    yardstick, and is judged against the exact retrain and a blind baseline
  R/data-leakage, R/leakage-model,  Rashid et al., on a small model pre-trained here (R/leakage-model):
  R/leakage                         benign, privacy-backdoored (the positive control) and poisoned
                                    releases, each screened, then fine-tuned by the victim; MIA AUC,
                                    extraction and validation perplexity, each against benign
  R/report.html, R/report.md        everything above, read back from the runs' saved files
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lethe import verdicts
from lethe.assets import build_assets
from lethe.config import AssetsConfig, DemoConfig, LeakageConfig
from lethe.config.demo import LEAKAGE_MODEL
from lethe.data.build import build_data
from lethe.models import ALIASES
from lethe.runs import Run, read_json

log = logging.getLogger("lethe")
# the summary's attack columns (label, width): three of lethe.leakage.report.HEADLINE_ATTACKS, in the order the
# demo has always printed them
SUMMARY_ATTACKS = {"loss": ("loss", 7), "min_k": ("min_k", 7), "reference_model": ("ref.model", 10)}


def unlearning_summary(half: dict) -> dict:
    """Rows of the unlearning half: the target before and after unlearning, and its exact retrain; the distance
    to that retrain; the blind baseline of the Min-K% samples."""
    results, eval_settings = half["unlearn"], half["eval"]

    def row(metrics: dict) -> dict:
        return {"forget_ppl": metrics["ppl"]["forget"], "approximate_ppl": metrics["ppl"]["approximate"],
                "general_ppl": metrics["ppl"]["general"], "gap": metrics["approx_gap"]["log_ppl_ratio"],
                "mink_auc": metrics["mia"]["auc"], "mink_auc_ci95": metrics["mia"]["ci95"]}

    blind = results.get("blind")
    summary = {"method": results["method"], "steps": results["train"]["steps"], "stopped": results["train"]["stopped"],
               "kept_step": results["train"].get("kept_step"),
               "flops_vs_retraining": results["cost"]["ratio_vs_pretrain"],
               "before": row(results["before"]), "after": row(results["after"]), "retrain": row(half["retrained"]),
               "distance": half["distance"], "mink_k": eval_settings.headline_k}
    if blind:
        summary["blind"] = {key: blind[key] for key in ("auc", "ci95", "separable", "p_value")}
    return summary


def leakage_summary(results: dict) -> dict:
    """One row per release × fine-tuning mode: headline MIA AUCs, secrets extracted, validation perplexity."""
    rows = {}
    for variant, modes in results["variants"].items():
        for mode, cell in modes.items():
            rows[f"{variant} / {mode}"] = {
                **{f"{attack}_auc": cell["mia"][attack]["auc"] for attack in SUMMARY_ATTACKS if attack in cell["mia"]},
                "nsr": cell["extraction"]["nsr"], "targets": cell["extraction"]["targets"],
                "val_ppl": cell["utility"]["val_ppl"]}
    return rows


def control_variants(config: LeakageConfig) -> list[str]:
    """The releases that are positive controls: Wen et al.'s privacy backdoor, a gain known to exist."""
    return [name for name in config.variants
            if config.poison_config(name, model=".", targets=".", seed=0).variant == "privacy_backdoor"]


def demo_verdicts(summary: dict, leakage: dict, config: LeakageConfig) -> list[dict]:
    """One verdict per claim the demo makes (lethe.verdicts states the rules), from numbers in its results."""
    u = summary["unlearning"]
    found = [verdicts.blind_split(u["blind"])] if "blind" in u else []
    found.append(verdicts.remembers({"auc": u["before"]["mink_auc"], "ci95": u["before"]["mink_auc_ci95"]}))
    found.append(verdicts.unlearning_lands(u["distance"]["after"], u["retrain"]["mink_auc"]))
    comparisons, controls = leakage["comparisons"], control_variants(config)
    control = verdicts.control_seen(comparisons, controls[0] if controls else None)
    found.append(control)
    found += [verdicts.leakage_raised(comparisons, variant, control)
              for variant in comparisons if variant not in controls]
    screens = leakage.get("screen") or {}  # each release as its victim screened it before fine-tuning
    found += [verdicts.screened(variant, screens[variant]) for variant in config.variants if variant in screens]
    return found


def format_verdicts(found: list[dict]) -> str:
    return "\n".join(["What this run showed:"] + [f"- {v['line']}" for v in found])


def format_summary(summary: dict) -> str:
    u = summary["unlearning"]
    kept = f"; kept step {u['kept_step']}'s model, nearer the mark" if u.get("kept_step") else ""
    lines = [f"Unlearning ({u['method']}, {u['steps']} steps, stopped: {u['stopped']}{kept}): the target (trained on "
             "the forget set) against its exact retrain (never trained on it)",
             f"{'':<9}{'forget PPL':>12}{'approx PPL':>12}{'gap':>8}{'Min-K% AUC':>12}{'general PPL':>13}"]
    for when, label in (("before", "target"), ("after", "unlearned"), ("retrain", "retrain")):
        r = u[when]
        lines.append(f"{label:<9}{r['forget_ppl']:>12.2f}{r['approximate_ppl']:>12.2f}{r['gap']:>8.3f}"
                     f"{r['mink_auc']:>12.3f}{r['general_ppl']:>13.2f}")
    distance = u["distance"]
    lines += ["gap = log(forget PPL / approx PPL); the exact retrain shows where unlearning should land",
              "distance to the exact retrain (forget PPL ratio, 1 = same; PrivLeak, 0 = same Min-K% AUC): "
              + ", ".join(f"{when} {d['forget_ppl_ratio']:.3f} / {d['privleak']:+.3f}"
                          for when, d in (("target", distance["before"]), ("unlearned", distance["after"])))]
    if "blind" in u:
        b = u["blind"]
        lines.append(f"blind baseline of the Min-K% samples (a text classifier, no model): AUC {b['auc']:.3f}, "
                     f"permutation null 95% range {b['ci95'][0]:.3f}–{b['ci95'][1]:.3f}"
                     + (": SEPARABLE, the Min-K% AUCs are no evidence" if b["separable"] else ": not separable"))
    if u["flops_vs_retraining"]:
        lines.append(f"unlearning cost {u['flops_vs_retraining']:.1f}x less compute than the exact retrain "
                     "(6·N·tokens)")
    lines += ["", "Leakage after the victim's fine-tuning (MIA AUC: member vs non-member PII records)"]
    model = summary["leakage_model"]
    if model["pretrained_here"]:
        lines.append(f"on a {model['parameters'] / 1e6:.2f}M-parameter {model['preset']} model pre-trained here "
                     f"({model['tokens'] / 1e3:.0f}k tokens): {model['why']}")
    lines.append(f"{'release / mode':<30}" + "".join(label.rjust(width) for label, width in SUMMARY_ATTACKS.values())
                 + f"{'NSR':>8}{'val PPL':>9}")
    for name, r in summary["leakage"].items():
        aucs = "".join(f"{r.get(f'{a}_auc', float('nan')):>{width}.3f}" for a, (_, width) in SUMMARY_ATTACKS.items())
        lines.append(f"{name:<30}{aucs}{r['nsr']:>4}/{r['targets']:<3}{r['val_ppl']:>9.2f}")
    lines.append("NSR: secrets recovered exactly by greedy decoding from their prefix")
    return "\n".join(lines)


def _unlearning_half(config: DemoConfig, root: Path) -> dict:
    from lethe.data.roles import RunData
    from lethe.models import load_model, model_context
    from lethe.training.target import build_target
    from lethe.unlearning.evaluation import load_role_scores, retrain_distance, score_roles, unlearning_metrics
    from lethe.unlearning.run import unlearn

    print(f"[1/2] unlearning: {config.model} trained on a forget + retain set (the target) and on the retain set "
          f"alone (its exact retrain); then {config.unlearn.method} unlearns the forget set from the target")
    data = root / "data-unlearning"
    build_data(config.unlearning_data.model_copy(update={"out": data}))
    build_target(config.target.model_copy(update={"data": data}), root / "target")
    settings = config.unlearn.model_copy(update={"model": str(root / "target"), "data": data})
    results = unlearn(settings, root / "unlearning")
    retrain, tokenizer = load_model(root / "target" / "retrain")
    roles = RunData.load(data, settings.domain, tokenizer, settings.chunk, model_context(retrain))
    retrained = score_roles(retrain, tokenizer, roles, settings.eval.batch_tokens,
                            root / "target" / "scores" / "retrain-roles")
    scores = {when: load_role_scores(root / "unlearning" / "scores" / stage, settings.domain)
              for when, stage in (("before", "original"), ("after", "unlearned"))}
    return {"unlearn": results, "eval": settings.eval, "retrained": unlearning_metrics(retrained, settings.eval),
            "distance": {when: retrain_distance(s, retrained, settings.eval) for when, s in scores.items()}}


def _leakage_half(config: DemoConfig, root: Path) -> dict:
    from lethe.leakage.study import run_leakage
    from lethe.training.pretrain import pretrain

    data = root / "data-leakage"
    build_data(config.leakage_data.model_copy(update={"out": data}))
    leakage = config.leakage.model_copy(update={"data": data})
    if config.leakage_pretrain is not None:
        print(f"[2/2] leakage: pre-training a {config.leakage_pretrain.preset} model on known text first (a poisoned "
              "SmolLM2 release alone would cost 12+ minutes)")
        pretrain(config.leakage_pretrain.model_copy(update={"data": data}), root / LEAKAGE_MODEL)
        leakage = leakage.model_copy(update={"model": str(root / LEAKAGE_MODEL)})
    print(f"[2/2] leakage: {' vs '.join(leakage.variants)} releases, the victim fine-tunes with "
          f"{', '.join(leakage.modes)}")
    return run_leakage(leakage, root / "leakage")


def leakage_model(config: DemoConfig, root: Path) -> dict:
    """Which model the leakage half ran on, and why (the summary says it in words)."""
    if config.leakage_pretrain is None:
        return {"model": config.model, "pretrained_here": False}
    pretrained = read_json(root / LEAKAGE_MODEL / "results.json")
    return {"model": LEAKAGE_MODEL, "pretrained_here": True, "preset": config.leakage_pretrain.preset,
            "parameters": pretrained["model"]["parameters"], "tokens": pretrained["train"]["tokens"],
            "why": "the positive control needs about 100 records a side, and one poisoned release of SmolLM2-135M "
                   "costs 12+ minutes of CPU at 64, so this half runs on a small model whose every training text "
                   "is known"}


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
                   "leakage_model": leakage_model(config, run.path), "leakage": leakage_summary(halves["leakage"])}
        found = demo_verdicts(summary, halves["leakage"], config.leakage)
        results = {"model": config.model, "verdicts": found, **summary,
                   "comparisons": halves["leakage"]["comparisons"],
                   "seconds": {**seconds, "total": round(time.time() - started, 1)},
                   "runs": {"target": "target", "unlearning": "unlearning", "leakage": "leakage"}}
        text = format_verdicts(found) + "\n\n" + format_summary(summary)
        (run.path / "summary.txt").write_text(text + "\n")
        run.write_results(results)
    report = write_report([run.path], run.path)
    print("\n" + text)
    print(f"\ndemo finished in {results['seconds']['total']:.0f} s; report: {report}\neverything is in {run.path}")
    return results
