"""Run directories: everything needed to rebuild a number without rerunning a model.

Layout: run.json (command, status), config.yaml (resolved), env.json, data_hashes.json, log.txt,
scores/ (per-sample), results.json (aggregate, written last), plus model/ or plots/ as produced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from lethe.config import to_yaml
from lethe.errors import LetheError
from lethe.processes import from_main_process, is_main_process

log = logging.getLogger("lethe")

PACKAGES = ("lethe-llm", "torch", "transformers", "accelerate", "peft", "datasets", "tokenizers",
            "safetensors", "numpy", "scikit-learn", "pydantic", "opacus")


def write_json(path: Path, payload: Any) -> None:
    """Write atomically so a crash never leaves half a results file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LetheError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise LetheError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def environment(seed: int | None = None) -> dict[str, Any]:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "packages": versions,
        "git_commit": git_commit(),
        "seed": seed,
        "argv": sys.argv,
        "lethe_home": os.environ.get("LETHE_HOME"),
    }


class Run:
    """One command's output directory."""

    def __init__(self, path: Path, command: str, main_process: bool = True) -> None:
        self.path = path
        self.command = command
        self.main_process = main_process  # only one process of a distributed run writes the record
        self._log_handler: logging.Handler | None = None

    @property
    def scores_dir(self) -> Path:
        return self.path / "scores"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @classmethod
    def start(cls, out: Path, command: str, config: BaseModel, *, overwrite: bool = False,
              resume: bool = False, seed: int | None = None) -> Run:
        """Claims `out` and writes the record; under `accelerate launch` the main process does, and the
        others wait until it has, then fail with it if it refused (rather than wait for it forever)."""
        run = cls(Path(out), command, is_main_process())
        refusal = None
        if run.main_process:
            try:
                run._claim(config, overwrite=overwrite, resume=resume)
            except LetheError as exc:
                refusal = str(exc)
            else:
                run.path.mkdir(parents=True, exist_ok=True)
                (run.path / "config.yaml").write_text(to_yaml(config))
                write_json(run.path / "env.json", environment(seed))
                write_json(run.path / "run.json", {"command": command, "status": "running",
                                                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
                run._attach_log()
        if refusal := from_main_process(refusal):
            raise LetheError(refusal)
        return run

    def _claim(self, config: BaseModel, *, overwrite: bool, resume: bool) -> None:
        if not self.path.exists() or not any(self.path.iterdir()):
            if resume:
                raise LetheError(f"nothing to resume: {self.path} holds no run")
            return
        info_path = self.path / "run.json"
        if not info_path.is_file():
            raise LetheError(f"{self.path} is not empty and holds no Lethe run; refusing to write into it")
        info = read_json(info_path)
        if overwrite:
            shutil.rmtree(self.path)
            return
        status, command = info.get("status"), info.get("command")
        if resume:
            if command != self.command:
                raise LetheError(f"{self.path} holds a `lethe {command}` run, not `lethe {self.command}`")
            if status == "done":
                raise LetheError(f"the run in {self.path} already finished; nothing to resume")
            saved = self.path / "config.yaml"
            if saved.is_file() and yaml.safe_load(saved.read_text()) != config.model_dump(mode="json"):
                raise LetheError(f"the config differs from the one {self.path} was started with; resume with "
                                 f"--config {saved}")
            return
        if status != "done":
            raise LetheError(f"{self.path} holds an unfinished `lethe {command}` run ({status}); continue it with "
                             "--resume where the command offers it, or start again with --overwrite")
        raise LetheError(f"{self.path} already holds a `lethe {command}` run ({status}); choose another "
                         "--out or pass --overwrite")

    def _attach_log(self) -> None:
        handler = logging.FileHandler(self.path / "log.txt")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        self._log_handler = handler

    def record_data(self, files: dict[str, Path]) -> None:
        if self.main_process:
            write_json(self.path / "data_hashes.json",
                       {name: {"path": str(path), "sha256": sha256_file(path)} for name, path in files.items()})

    def write_results(self, results: dict[str, Any]) -> Path:
        target = self.path / "results.json"
        if self.main_process:
            write_json(target, results)
        return target

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        if kind is None:
            self.close("done")
        elif issubclass(kind, KeyboardInterrupt):
            self.close("interrupted", error="interrupted")
        else:
            self.close("failed", error=str(exc) or kind.__name__)

    def close(self, status: str, error: str | None = None) -> None:
        info_path = self.path / "run.json"
        if self.main_process and info_path.is_file():
            info = read_json(info_path)
            info.update(status=status, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            if error:
                info["error"] = error
            write_json(info_path, info)
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
