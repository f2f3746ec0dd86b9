"""`lethe` command line, derived from the recipe registry (`lethe.recipes`): each command's flags, switches and
handler come from its recipe; this module only builds the parser and runs one command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import traceback

from lethe.errors import LetheError, explain, unexpected
from lethe.processes import is_main_process, launched_processes
from lethe.recipes import GROUPS, Recipe, in_flow_order

log = logging.getLogger("lethe")


def _add_command(parent, recipe: Recipe) -> None:
    p = parent.add_parser(recipe.command.split()[-1], help=recipe.help)
    if recipe.schema is not None:
        p.add_argument("--config", metavar="FILE", help="YAML config validated against the command's schema")
        p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                       help="override one config key, e.g. --set train.lr=1e-4 (repeatable)")
    if recipe.out == "run":
        required = recipe.out_default is None
        p.add_argument("--out", required=required, default=recipe.out_default,
                       help="run directory to write" + ("" if required else f" (default: {recipe.out_default})"))
    for name, flag in recipe.flags.items():
        option = f"--{name.replace('_', '-')}"
        if flag.value is not None:
            p.add_argument(option, dest=name, action="store_const", const=True, default=None, help=flag.help)
        else:
            p.add_argument(option, dest=name, help=flag.help)
    if recipe.overwrite:
        p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    for name, text in recipe.switches.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, action="store_true", help=text)
    if recipe.arguments is not None:
        recipe.arguments(p)
    p.set_defaults(recipe=recipe)


def build_parser() -> argparse.ArgumentParser:
    from lethe import __version__

    parser = argparse.ArgumentParser(prog="lethe",
                                     description="Machine unlearning of LLMs, and measuring what they leak.")
    parser.add_argument("--version", action="version", version=f"lethe {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--offline", action="store_true", default=None,
                        help="never reach the Hugging Face Hub: models and data sets come from its cache only "
                        "(default: the environment's HF_HUB_OFFLINE)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for recipe in in_flow_order():
        group, *rest = recipe.command.split()
        if not rest:
            _add_command(commands, recipe)
            continue
        if group not in groups:
            sub = commands.add_parser(group, help=GROUPS.get(group) or f"{group} commands")
            groups[group] = sub.add_subparsers(dest=f"{group}_command", metavar="COMMAND", required=True)
        _add_command(groups[group], recipe)
    return parser


# loggers of the libraries Lethe drives; `py.warnings` carries their `warnings.warn` calls (logging.captureWarnings)
THIRD_PARTY = ("py.warnings", "transformers", "peft", "opacus", "accelerate", "datasets", "torch")


class _IntoRunLog(logging.Handler):
    """Third-party warnings (PEFT's, Opacus's, transformers' loading report) go to the run's log.txt, where the
    terminal shows them only with --debug: the terminal is for what Lethe concluded."""

    def emit(self, record: logging.LogRecord) -> None:
        log.debug("%s: %s", record.name, record.getMessage())


@contextlib.contextmanager
def third_party_into_run_log():
    handler, loggers = _IntoRunLog(), [logging.getLogger(name) for name in THIRD_PARTY]
    propagate = [logger.propagate for logger in loggers]
    logging.captureWarnings(True)
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for logger, before in zip(loggers, propagate, strict=True):
            logger.removeHandler(handler)
            logger.propagate = before


def _stop_gracefully(signum, frame):
    raise KeyboardInterrupt


def _settle_environment(offline: bool | None) -> None:
    """The command line owns its process, so it sets what `import lethe` must not: offline mode when asked (before
    huggingface_hub and datasets read it, on their import), and quiet third-party progress bars (Lethe logs its own)."""
    if offline:
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
        for module in ("huggingface_hub.constants", "datasets.config"):  # read already, by an in-process caller
            if module in sys.modules:
                sys.modules[module].HF_HUB_OFFLINE = True
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _settle_environment(args.offline)
    # SIGTERM (a scheduler pre-empting the job) stops like Ctrl-C: the run is marked interrupted and
    # resumes from its last checkpoint. SIGINT is reset too, since a background job may inherit it ignored.
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _stop_gracefully),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    try:
        return _run(args)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _refuse_several_processes(recipe: Recipe) -> None:
    processes = launched_processes()
    if processes > 1 and not recipe.multi_process:
        raise LetheError(f"`lethe {recipe.command}` runs in one process, not {processes}: start it without "
                         "`accelerate launch` (or with --num_processes 1)")


def _run(args: argparse.Namespace) -> int:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("lethe: %(message)s"))
    handler.setLevel(logging.DEBUG if args.debug else logging.INFO)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)  # run logs keep per-step records; the terminal shows INFO
    try:
        _refuse_several_processes(args.recipe)
        with third_party_into_run_log():
            if is_main_process():
                args.recipe.execute(args)
            else:  # the main process reports; the others only warn
                handler.setLevel(logging.WARNING)
                with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                    args.recipe.execute(args)
        return 0
    except KeyboardInterrupt:
        resumable = "resume" in args.recipe.switches
        print("lethe: interrupted" + (" (a run with checkpoints continues with --resume)" if resumable else
                                      " (run the command again to start over)"), file=sys.stderr)
        return 130
    except Exception as exc:  # one line in Lethe's words (lethe.errors.explain); the traceback with --debug
        known = explain(exc)
        if args.debug:
            traceback.print_exc()
        print(f"lethe: error: {known or unexpected(exc)}", file=sys.stderr)
        return 2 if known is not None else 1
    finally:
        log.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
