"""Errors that the CLI reports as one line, without a traceback, and the one place that turns the errors of the OS
and of the libraries Lethe calls (YAML, JSON, safetensors, tokenizers, PEFT) into such a line."""

from __future__ import annotations

import errno
import json


class LetheError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class TrainingDiverged(LetheError):
    """The loss or gradient became NaN/inf; the last good weights were kept."""


# what to do about an OS error, by errno: the file it names and these words make the line
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full; free space or choose another --out",
    errno.EDQUOT: "the disk quota is exhausted; free space or choose another --out",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.ENAMETOOLONG: "a name in this path is longer than the file system allows; choose a shorter one",
    errno.ENOTDIR: "a part of this path is a file, not a directory; choose another path",
    errno.EISDIR: "it is a directory where a file was expected",
    errno.EEXIST: "it already exists (another process may have written it); choose another --out",
    errno.EACCES: "permission denied; choose a path you can write to",
    errno.EPERM: "the operation is not permitted there; choose a path you can write to",
    errno.ENOENT: "no such file or directory (or it cannot be created there)",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
    errno.ENOMEM: "out of memory",
}


def one_line(text: str) -> str:
    """Messages of libraries span lines (YAML points at the column); the terminal gets one."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _first_sentence(text: str) -> str:
    return one_line(text).split(". ")[0].rstrip(".")


def explain(exc: BaseException) -> str | None:
    """`exc` in Lethe's words (the file it concerns and what to do), or None for an error Lethe does not expect."""
    if isinstance(exc, LetheError):
        return one_line(str(exc))
    if isinstance(exc, OSError) and exc.errno in _OS_ADVICE:
        where = exc.filename if exc.filename is not None else "a file Lethe reads or writes"
        return f"{where}: {_OS_ADVICE[exc.errno]}"
    if isinstance(exc, UnicodeDecodeError):
        return f"a file Lethe read is not UTF-8 text (byte {exc.start}); save it as UTF-8"
    if isinstance(exc, json.JSONDecodeError):
        return f"a file Lethe read is not valid JSON ({exc.msg} at line {exc.lineno})"
    kind = type(exc).__name__
    if kind == "SafetensorError":
        return f"a safetensors file is damaged ({_first_sentence(exc).lower()}); write the weights again"
    if kind == "NoMatchingPeftModuleError" or (kind == "ValueError" and "Target modules" in str(exc)):
        return f"train.lora.target_modules: {_first_sentence(exc)}; name modules of the model (or all-linear)"
    if type(exc).__module__.startswith("yaml"):
        return f"invalid YAML: {one_line(exc)}"
    if kind == "BrokenProcessPool":  # a --jobs child killed from outside (the OOM killer, a kill by hand)
        return ("a process of --jobs died without a word (killed, or out of memory: try fewer --jobs); the runs "
                "that finished are kept, continue with --resume")
    return None


def unexpected(exc: BaseException) -> str:
    """The line for an error `explain` does not know: its type and message, a bug to report."""
    return f"unexpected {type(exc).__name__}: {one_line(exc)} (rerun with --debug for the traceback)"
