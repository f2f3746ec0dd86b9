"""`lethe assets`: the offline model and corpora, built once and cached."""

from __future__ import annotations

from lethe.config import AssetsConfig
from lethe.recipes import Flag, comma_list, lazy, recipe


def summary(results: dict, config: AssetsConfig, out) -> None:
    for name, path in results.items():
        print(f"{name:<14} {path}")


recipe(command="assets", help="build the offline model and corpora (idempotent)", schema=AssetsConfig,
       run=lazy("lethe.assets", "build_assets"), api_name="build_assets", out="none", overwrite=False,
       flags={"corpora": Flag("domains to collect, comma-separated (default: all; '' for none)", parse=comma_list),
              "no_model": Flag("skip the SmolLM2 conversion", key="model", value=False),
              "force": Flag("rebuild even what is cached", value=True)},
       summary=summary)
