"""Hugging Face Hub names: models as `org/name[@revision]`, data sets as `hf:org/name[:config][@revision]`.

Both go through the Hub libraries' own download and cache (huggingface_hub's `snapshot_download`, `datasets.
load_dataset`), so HF_HOME, HF_HUB_CACHE, HF_TOKEN and HF_HUB_OFFLINE mean what they mean everywhere else. The commit
each name resolved to is recorded in the env.json of the runs open in this process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lethe.errors import LetheError

# A repository id has one slash and no path syntax: `runs/tiny` is both, so a directory that exists wins (models.py).
_REPO = r"[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]"
HUB_MODEL = re.compile(rf"^(?P<repo>{_REPO})(?:@(?P<revision>[\w./-]+))?$")
HUB_DATASET = re.compile(rf"^hf:(?P<repo>{_REPO})(?::(?P<config>[\w.-]+))?(?:@(?P<revision>[\w./-]+))?$")
# What a model needs, never pickled weights (*.bin, *.pt): a repo that has only those arrives without weights and
# is refused like a local directory with only `.bin` files. `*.py` is custom code, run only with trust_remote_code.
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.py"]

_RESOLVED: dict[str, dict] = {}  # this process's hub names and the commits they resolved to


def resolved() -> dict[str, dict]:
    """Hub names this process resolved so far: {name: {repo, revision, commit}} (env.json's `hub`)."""
    return {name: dict(entry) for name, entry in _RESOLVED.items()}


def _record(name: str, entry: dict) -> None:
    from lethe.runs import note_environment

    _RESOLVED[name] = entry
    note_environment("hub", {name: entry})


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def is_hub_model(name: str) -> bool:
    return HUB_MODEL.match(name) is not None


def download_model(name: str) -> Path:
    """The local snapshot of hub model `org/name[@revision]` (downloaded once into the Hub cache, then reused)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    match = HUB_MODEL.match(name)
    if match is None:
        raise LetheError(f"{name!r} is not a Hugging Face Hub model name (org/name or org/name@revision)")
    repo, revision = match["repo"], match["revision"]
    try:
        path = Path(snapshot_download(repo, revision=revision, allow_patterns=MODEL_FILES))
    except LocalEntryNotFoundError:
        if offline():
            raise LetheError(f"model {name!r} is neither a directory nor in the Hugging Face cache "
                             f"({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE is set: download it once with a network "
                             f"(`hf download {repo}`) or unset HF_HUB_OFFLINE") from None
        raise LetheError(f"model {name!r} is neither a directory nor in the Hugging Face cache, and the Hub could not "
                         "be reached") from None
    except GatedRepoError:
        raise LetheError(f"model {repo!r} is gated on the Hugging Face Hub: accept its terms there and log in "
                         "(`hf auth login` or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise LetheError(f"model {name!r} is neither a directory nor a model on the Hugging Face Hub (a private one "
                         "needs `hf auth login` or HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise LetheError(f"model {repo!r} has no revision {revision!r} on the Hugging Face Hub") from None
    except HfHubHTTPError as exc:
        raise LetheError(f"model {name!r}: the Hugging Face Hub answered {exc}".splitlines()[0]) from None
    if not any(path.glob("*.safetensors")):
        raise LetheError(f"model {name!r} has no .safetensors weights on the Hugging Face Hub (pickled weights, "
                         "which can run code when loaded, are never downloaded): choose a repo or revision with "
                         "safetensors")
    # a snapshot's directory is named by its commit, whatever branch or tag the name asked for
    _record(name, {"repo": repo, "revision": revision or "main", "commit": path.name})
    return path


@dataclass(frozen=True)
class HubDataset:
    repo: str
    config: str | None
    revision: str | None


def parse_dataset(name: str) -> HubDataset | None:
    """`hf:org/name[:config][@revision]` parsed; None for anything else (a local path)."""
    if not name.startswith("hf:"):
        return None
    match = HUB_DATASET.match(name)
    if match is None:
        raise LetheError(f"{name!r} is not a Hugging Face data set name: hf:org/name, hf:org/name:config, "
                         "hf:org/name@revision or hf:org/name:config@revision")
    return HubDataset(match["repo"], match["config"], match["revision"])
