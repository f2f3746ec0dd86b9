"""The handlers of `lethe` subcommands: each turns flags and YAML layers into a typed config, calls the
API and prints a short summary. The parser and dispatch live in `lethe.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _layers(args: argparse.Namespace, flags: dict[str, str]) -> list[dict[str, Any]]:
    """Config layers in precedence order: --config file, then named flags, then --set overrides."""
    from lethe.config import Layer, parse_overrides, read_yaml

    layers = [Layer(f"--config {args.config}", read_yaml(Path(args.config)))] if args.config else []
    layers += [Layer(f"--{flag.replace('_', '-')}", parse_overrides([f"{key}={value}"]))
               for flag, key in flags.items() if (value := getattr(args, flag)) is not None]
    layers.append(Layer("--set", parse_overrides(args.set)))
    return layers


def _strip_preset(layers: list[dict[str, Any]]) -> str | None:
    preset = None
    for layer in layers:
        preset = layer.pop("preset", preset)
    return preset


def cmd_assets(args):
    from lethe.assets import build_assets
    from lethe.config import AssetsConfig, Layer, resolve

    layers = _layers(args, {})
    if args.no_model:
        layers.append(Layer("--no-model", {"model": False}))
    if args.corpora is not None:
        layers.append(Layer("--corpora", {"corpora": [c for c in args.corpora.split(",") if c]}))
    if args.force:
        layers.append(Layer("--force", {"force": True}))
    for name, path in build_assets(resolve(AssetsConfig, *layers)).items():
        print(f"{name:<14} {path}")


def cmd_data_build(args):
    from lethe.config import DataBuildConfig, resolve
    from lethe.data.build import build_data
    from lethe.tables import format_split_table

    config = resolve(DataBuildConfig, *_layers(args, {"out": "out", "seed": "seed"}))
    results = build_data(config, overwrite=args.overwrite)
    print(format_split_table(results))
    print(f"\nsplits written to {config.out}")


def cmd_data_pii(args):
    from lethe.config import PiiConfig, resolve
    from lethe.data.pii import build_pii

    config = resolve(PiiConfig, *_layers(args, {"out": "out", "data": "data", "seed": "seed"}))
    manifest = build_pii(config, overwrite=args.overwrite)
    docs = manifest["documents"]
    print(f"{manifest['members']} member {manifest['target']} (x{manifest['repetitions']}) among {docs['filler']} "
          f"filler documents; {manifest['nonmembers']} non-members; {docs['validation']} validation documents\n"
          f"written to {config.out}")


def cmd_pretrain(args):
    from lethe.pretrain import pretrain, pretrain_config
    from lethe.tables import format_ppl_table

    layers = _layers(args, {"data": "data"})
    preset = args.preset or _strip_preset(layers) or "tiny"
    config = pretrain_config(preset, *layers)
    results = pretrain(config, Path(args.out), overwrite=args.overwrite, resume=args.resume,
                       accept_data_change=args.accept_data_change)
    if results:
        train = results["train"]
        print(f"trained {results['model']['parameters'] / 1e6:.2f}M parameters: {train['steps']} steps, "
              f"{train['tokens']:,} tokens in {train['seconds']:.0f} s ({train['tokens_per_second']:,.0f} tok/s)")
        print(format_ppl_table(results["ppl"]))
        print(f"\nmodel saved to {results['model']['path']}")


def cmd_eval_ppl(args):
    from lethe.config import EvalPplConfig, Layer, resolve
    from lethe.evaluate import eval_ppl
    from lethe.tables import format_ppl_table

    layers = _layers(args, {"model": "model", "data": "data"})
    if args.splits:
        layers.append(Layer("--splits", {"splits": args.splits.split(",")}))
    results = eval_ppl(resolve(EvalPplConfig, *layers), Path(args.out), overwrite=args.overwrite)
    print(format_ppl_table(results["ppl"]))


def cmd_unlearn(args):
    from lethe.config import UnlearnConfig, resolve
    from lethe.tables import format_unlearning_table
    from lethe.unlearning.run import unlearn

    config = resolve(UnlearnConfig, *_layers(args, {"model": "model", "data": "data", "domain": "domain",
                                                    "method": "method"}))
    results = unlearn(config, Path(args.out), overwrite=args.overwrite)
    print(format_unlearning_table({"original": results["before"], config.method: results["after"]},
                                  results.get("blind")))
    print(f"\nunlearned model saved to {results['path']}")


def cmd_eval_unlearning(args):
    from lethe.config import EvalUnlearningConfig, resolve
    from lethe.tables import format_unlearning_table
    from lethe.unlearning.evaluation import eval_unlearning

    config = resolve(EvalUnlearningConfig, *_layers(args, {"model": "model", "original": "original",
                                                           "retrained": "retrained", "data": "data",
                                                           "domain": "domain"}))
    results = eval_unlearning(config, Path(args.out), overwrite=args.overwrite)
    print(format_unlearning_table({k: v for k, v in results.items() if k != "blind"}, results.get("blind")))


def cmd_target(args):
    from lethe.config import TargetConfig, resolve
    from lethe.known_members import build_target

    results = build_target(resolve(TargetConfig, *_layers(args, {"model": "model", "data": "data"})), Path(args.out),
                           overwrite=args.overwrite)
    for name in ("target", "retrain"):
        train = results[name]
        print(f"{name}: {train['steps']} steps, {train['tokens']:,} tokens on {', '.join(train['splits'])} in "
              f"{train['seconds']:.0f} s -> {train['path']}")
    splits = list(results["ppl"]["base"])
    print(f"{'perplexity':<24}" + "".join(f"{who:>10}" for who in results["ppl"]))
    for split in splits:
        print(f"{split:<24}" + "".join(f"{results['ppl'][who][split]:>10.2f}" for who in results["ppl"]))


def cmd_retrain(args):
    from lethe.pretrain import retrain
    from lethe.tables import format_ppl_table

    results = retrain(Path(getattr(args, "from")), args.forget.split(","), Path(args.out), overwrite=args.overwrite,
                      resume=args.resume, accept_data_change=args.accept_data_change)
    if results:
        print(format_ppl_table(results["ppl"]))


def cmd_attack_mia(args):
    from lethe.attacks.mia import format_mia_table, run_mia
    from lethe.config import MiaConfig, resolve

    flags = {"model": "model", "members": "members", "nonmembers": "nonmembers", "reference_model": "reference_model",
             "calibration": "calibration", "data": "data"}
    results = run_mia(resolve(MiaConfig, *_layers(args, flags)), Path(args.out), overwrite=args.overwrite)
    print(format_mia_table(results))
    print(f"\n{results['members']} members, {results['nonmembers']} non-members; ROC plots in {args.out}/plots")


def cmd_attack_extract(args):
    from lethe.attacks.extraction import extract, format_extraction_table
    from lethe.config import ExtractConfig, resolve

    config = resolve(ExtractConfig, *_layers(args, {"model": "model", "targets": "targets"}))
    print(format_extraction_table(extract(config, Path(args.out), overwrite=args.overwrite)))
    print(f"\nper-target generations in {args.out}/generations.jsonl")


def cmd_poison(args):
    from lethe.config import PoisonConfig, resolve
    from lethe.poisoning.poison import poison

    flags = {"model": "model", "targets": "targets", "reference": "reference", "variant": "variant", "data": "data"}
    results = poison(resolve(PoisonConfig, *_layers(args, flags)), Path(args.out), overwrite=args.overwrite)
    loss, bound, train = results["loss"], results["bound"], results["train"]
    print(f"{results['variant']}: target loss {loss['before']['targets']:.3f} -> {loss['after']['targets']:.3f}, "
          f"reference loss {loss['before']['reference']:.3f} -> {loss['after']['reference']:.3f} "
          f"(bound {bound['limit']:.3f})")
    if train:
        detail = (f" ({train['ascent_steps']} ascent, {train['projection_steps']} projection)"
                  if train.get("projection_steps") else "")
        print(f"{train['steps']} steps kept{detail}, stopped: {train['stopped']}")
    print(f"released model saved to {results['path']}")


def cmd_finetune(args):
    from lethe.config import FinetuneConfig, resolve
    from lethe.finetune import finetune

    flags = {"model": "model", "data": "data", "validation": "validation", "mode": "mode", "data_dir": "data_dir"}
    results = finetune(resolve(FinetuneConfig, *_layers(args, flags)), Path(args.out), overwrite=args.overwrite)
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


def cmd_experiment_leakage(args):
    from lethe.config import LeakageConfig, resolve
    from lethe.leakage.report import leakage_table
    from lethe.leakage.study import run_leakage

    config = resolve(LeakageConfig, *_layers(args, {"model": "model", "data": "data"}))
    results = run_leakage(config, Path(args.out), overwrite=args.overwrite, resume=args.resume)
    print(leakage_table(results))
    print(f"tables and plots in {args.out}/results.md and {args.out}/*.png")


def cmd_experiment_calibrate(args):
    from lethe.config import LeakageConfig, resolve
    from lethe.leakage.calibration import calibrate_victim, format_calibration

    config = resolve(LeakageConfig, *_layers(args, {"model": "model", "data": "data"}))
    print(format_calibration(calibrate_victim(config, Path(args.out), overwrite=args.overwrite, resume=args.resume)))


def _study(args):
    from lethe.config import UnlearningStudyConfig, resolve

    return resolve(UnlearningStudyConfig, *_layers(args, {"model": "model", "data": "data"}))


def cmd_experiment_unlearning(args):
    from lethe.tables import format_unlearning_table
    from lethe.unlearning.study import run_experiment

    results = run_experiment(_study(args), Path(args.out), overwrite=args.overwrite, resume=args.resume,
                             accept_data_change=args.accept_data_change)
    rows = {k: v for k, v in results.items() if isinstance(v, dict) and "ppl" in v}
    print(format_unlearning_table(rows))
    print(f"\ntables and plots in {args.out}/results.md and {args.out}/methods.png")


def cmd_sweep(args):
    from lethe.unlearning.study import run_sweep

    results = run_sweep(_study(args), Path(args.out), overwrite=args.overwrite, resume=args.resume,
                        accept_data_change=args.accept_data_change)
    print(f"{len(results['cells'])} cells; table and heatmaps in {args.out}")


def cmd_demo(args):
    from lethe.config import DemoConfig, resolve
    from lethe.demo import run_demo

    run_demo(resolve(DemoConfig, *_layers(args, {})), Path(args.out), overwrite=args.overwrite)


def cmd_report(args):
    from lethe.reporting import write_report

    html = write_report(args.runs, args.out, overwrite=args.overwrite)
    print(f"report written to {html} and {html.with_suffix('.md')}")


def cmd_config_reference(args):
    from lethe.config.reference import render_api_reference, render_config_reference

    text = render_api_reference() if args.api else render_config_reference()
    if args.out is None:
        print(text, end="")
        return
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"written to {args.out}")
