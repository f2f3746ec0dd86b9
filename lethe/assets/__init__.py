"""Offline assets: the SmolLM2 model and real-text corpora, cached under $LETHE_HOME."""

from __future__ import annotations

import logging
from pathlib import Path

from lethe.config import AssetsConfig, lethe_home

log = logging.getLogger("lethe")


def build_assets(config: AssetsConfig) -> dict[str, Path]:
    """Idempotent: converts/extracts only what is not cached yet (or everything with force)."""
    from lethe.assets.corpora import build_corpora
    from lethe.assets.smollm2 import ensure_smollm2
    from lethe.models import ALIASES

    built: dict[str, Path] = {}
    if config.model:
        built["smollm2-135m"] = ensure_smollm2(lethe_home() / ALIASES["smollm2-135m"], force=config.force)
    if config.corpora:
        built.update(build_corpora(lethe_home(), config.corpora, force=config.force))
    return built
