"""`lethe` command line: a thin layer that turns flags and YAML into typed configs for the API."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import traceback

from lethe.commands import (
    cmd_assets,
    cmd_attack_extract,
    cmd_attack_mia,
    cmd_config_reference,
    cmd_data_build,
    cmd_data_pii,
    cmd_demo,
    cmd_eval_ppl,
    cmd_eval_unlearning,
    cmd_experiment_calibrate,
    cmd_experiment_leakage,
    cmd_experiment_unlearning,
    cmd_finetune,
    cmd_poison,
    cmd_pretrain,
    cmd_report,
    cmd_retrain,
    cmd_sweep,
    cmd_target,
    cmd_unlearn,
)
from lethe.errors import LetheError
from lethe.processes import is_main_process, launched_processes

log = logging.getLogger("lethe")


def _common(parser: argparse.ArgumentParser, out_required: bool = True) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config validated against the command's schema")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help="override one config key, e.g. --set train.lr=1e-4 (repeatable)")
    if out_required:
        parser.add_argument("--out", required=True, help="run directory to write")
        parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")


DATA = "data directory from `lethe data build`"
SWITCHES = ("resume", "accept_data_change")
ACCEPT = "with --resume: continue although the data changed since the run started (recorded in the run)"


def _command(parent, name: str, help: str, handler, *, run_dir: bool = True, **flags: str) -> argparse.ArgumentParser:
    """A subcommand with --config/--set (and --out/--overwrite), plus `flags`: name → help (resume and
    accept_data_change are switches)."""
    p = parent.add_parser(name, help=help)
    _common(p, out_required=run_dir)
    for flag, text in flags.items():
        if flag in SWITCHES:
            p.add_argument(f"--{flag.replace('_', '-')}", dest=flag, action="store_true", help=text)
        else:
            p.add_argument(f"--{flag.replace('_', '-')}", dest=flag, help=text)
    p.set_defaults(handler=handler)
    return p


def build_parser() -> argparse.ArgumentParser:
    from lethe import __version__

    parser = argparse.ArgumentParser(prog="lethe",
                                     description="Machine unlearning of LLMs, and measuring what they leak.")
    parser.add_argument("--version", action="version", version=f"lethe {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _command(commands, "assets", "build the offline model and corpora (idempotent)", cmd_assets, run_dir=False,
                 corpora="domains to collect, comma-separated (default: all; '' for none)")
    p.add_argument("--no-model", action="store_true", help="skip the SmolLM2 conversion")
    p.add_argument("--force", action="store_true", help="rebuild even what is cached")

    data = commands.add_parser("data", help="build data splits").add_subparsers(dest="data_command", required=True)
    p = _command(data, "build", "forget/retain/approximate/general splits, deduplicated, by seed", cmd_data_build,
                 run_dir=False, out="directory for the splits (default: $LETHE_HOME/data/default)",
                 seed="shuffling seed")
    p.add_argument("--overwrite", action="store_true", help="replace splits already in --out")
    p = _command(data, "pii", "real documents with injected synthetic PII: a fine-tuning set and attack targets",
                 cmd_data_pii, run_dir=False, out="directory to write (required)", data=DATA,
                 seed="Faker and shuffling seed")
    p.add_argument("--overwrite", action="store_true", help="replace a PII set already in --out")

    _command(commands, "pretrain", "train a small model from scratch on known splits", cmd_pretrain,
             preset="micro or tiny (default: tiny)", data=DATA, resume="continue an interrupted run in --out",
             accept_data_change=ACCEPT)
    _command(commands, "target", "known members on a pre-trained LLM: continued training on forget + retain, and "
             "its exact retrain on retain alone", cmd_target, model="the pre-trained model", data=DATA)
    p = _command(commands, "retrain", "exact retraining: a pretrain run's recipe without the forget splits",
                 cmd_retrain, resume="continue an interrupted run in --out", accept_data_change=ACCEPT)
    p.add_argument("--from", required=True, metavar="RUN", help="the `lethe pretrain` run to repeat")
    p.add_argument("--forget", required=True, metavar="S1,S2", help="splits to leave out, e.g. code/forget")
    _command(commands, "unlearn", "unlearn a forget set with one method, scored before and after", cmd_unlearn,
             model="model directory, run directory or alias", data=DATA,
             domain="whose forget set to unlearn (code, science, books, ...)",
             method="ga, random_label, adversarial, ga_gd_in, ga_kl_in, ga_gd_general, ga_kl_general, npo, simnpo")

    evaluate = commands.add_parser("eval", help="evaluate models").add_subparsers(dest="eval_command", required=True)
    _command(evaluate, "ppl", "perplexity and next-token accuracy per split", cmd_eval_ppl,
             model="model directory, run directory or alias (smollm2-135m)", data=DATA,
             splits="splits to score, e.g. code/forget,code/approximate")
    _command(evaluate, "unlearning", "perplexity, Min-K% MIA and retraining distance of an unlearned model",
             cmd_eval_unlearning, model="the unlearned model", original="the model before unlearning",
             retrained="a model retrained without the forget set", data=DATA, domain="whose forget set was unlearned")

    attack = commands.add_parser("attack", help="privacy attacks").add_subparsers(dest="attack_command", required=True)
    _command(attack, "mia", "every membership-inference attack, from one scoring pass per model", cmd_attack_mia,
             model="the target model", members="member set: a split of --data or a JSONL/text/parquet file",
             nonmembers="non-member set (split or file), disjoint from the members",
             reference_model="reference model for the reference_model attack (same tokenizer)",
             calibration="auxiliary non-members for the reference_data attack (split or file)", data=DATA)
    _command(attack, "extract", "training-data extraction: decode from each target's prefix, look for its secret",
             cmd_attack_extract, model="the target model",
             targets="JSONL of target records, e.g. targets_member.jsonl from `lethe data pii`")

    _command(commands, "poison", "release a model that makes later fine-tuning on the targets leak more", cmd_poison,
             model="the clean pre-trained model", targets="the target records (split or file)",
             reference="D*: generic reference data for the utility bound (split or file)",
             variant="forget_to_flourish (default), benign, precurious or privacy_backdoor", data=DATA)
    _command(commands, "finetune", "the victim's fine-tuning of a released model on private data (full, LoRA, "
             "head; optionally DP-SGD)", cmd_finetune, model="the released model",
             data="D_ft: a split of --data-dir or a JSONL/text/parquet file",
             validation="held-out documents for validation perplexity (split or file)",
             mode="full (default), lora or head", data_dir=DATA)

    studies = {"model": "the model to unlearn from", "data": DATA,
               "resume": "continue: finished runs are read back, not redone", "accept_data_change": ACCEPT}
    experiment = commands.add_parser("experiment", help="whole studies").add_subparsers(dest="study", required=True)
    _command(experiment, "unlearning", "every method × domain, against the original and retrained model",
             cmd_experiment_unlearning, **studies)
    _command(experiment, "leakage", "released variants × victim fine-tuning modes: MIA, extraction, utility",
             cmd_experiment_leakage, model="the clean pre-trained model", data=DATA,
             resume="continue: finished runs are read back, not redone")
    _command(experiment, "calibrate", "the leakage study's victim: learning rate × epochs on a seed of its own, "
             "from the baseline release", cmd_experiment_calibrate, model="the clean pre-trained model", data=DATA,
             resume="continue: finished runs are read back, not redone")
    _command(commands, "sweep", "method × learning rate × steps (× domain) robustness grid", cmd_sweep, **studies)
    config = commands.add_parser("config", help="the typed config schemas")
    config = config.add_subparsers(dest="config_command", required=True)
    p = config.add_parser("reference", help="markdown reference of every command's config (docs/config.md)")
    p.add_argument("--out", metavar="FILE", help="write it here instead of printing it")
    p.add_argument("--api", action="store_true", help="the Python API (lethe.__all__) instead (docs/api.md)")
    p.set_defaults(handler=cmd_config_reference)
    p = commands.add_parser("report", help="an HTML report and its markdown twin from run directories (reads only "
                            "what the runs saved)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories; sub-runs inside them are included")
    p.add_argument("--out", help="directory for report.html and report.md (default: the run's own, for one run)")
    p.add_argument("--overwrite", action="store_true", help="replace a report.html/report.md already in --out")
    p.set_defaults(handler=cmd_report)
    p = _command(commands, "demo", "both threat models on SmolLM2-135M (unlearning, then a poisoned release's "
                 "leakage), ending in an HTML report", cmd_demo, run_dir=False)
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="replace a demo already in --out")
    return parser


def _stop_gracefully(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (a scheduler pre-empting the job) stops like Ctrl-C: the run is marked interrupted and
    # resumes from its last checkpoint. SIGINT is reset too, since a background job may inherit it ignored.
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _stop_gracefully),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    try:
        return _run(args)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# the commands whose every step is written for several processes (`accelerate launch`): they train
# data-parallel, and one process writes the run directory
MULTI_PROCESS = {cmd_pretrain, cmd_retrain, cmd_unlearn, cmd_finetune, cmd_poison}


def _command_name(args: argparse.Namespace) -> str:
    nested = ("data_command", "eval_command", "attack_command", "study", "config_command")
    return " ".join([args.command, *filter(None, (getattr(args, key, None) for key in nested))])


def _refuse_several_processes(args: argparse.Namespace) -> None:
    processes = launched_processes()
    if processes > 1 and args.handler not in MULTI_PROCESS:
        raise LetheError(f"`lethe {_command_name(args)}` runs in one process, not {processes}: start it without "
                         "`accelerate launch` (or with --num_processes 1)")


def _run(args: argparse.Namespace) -> int:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("lethe: %(message)s"))
    handler.setLevel(logging.DEBUG if args.debug else logging.INFO)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)  # run logs keep per-step records; the terminal shows INFO
    try:
        _refuse_several_processes(args)
        if is_main_process():
            args.handler(args)
        else:  # the main process reports; the others only warn
            handler.setLevel(logging.WARNING)
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                args.handler(args)
        return 0
    except LetheError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"lethe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lethe: interrupted (a run with checkpoints continues with --resume)", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: still one line, unless --debug
        if args.debug:
            raise
        print(f"lethe: error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        log.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
