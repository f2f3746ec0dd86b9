"""Build the leakage study's releases of one seed (targets and poisoned models, no victim cells) for screening.

    python scripts/screen_releases.py CONFIG.yaml OUT MODEL [VARIANT ...] [KEY=VALUE ...]

KEY=VALUE pairs override the study config (as `--set` does), e.g. data=runs/data pii.filler_docs=4.

Each release is the study's own step (lethe.leakage.study.Study), so a finished one is read back, not redone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lethe.config import LeakageConfig, deep_merge, parse_overrides, read_yaml
from lethe.leakage.study import Study


def main(config_path: str, out: str, model: str, *arguments: str) -> None:
    names = [a for a in arguments if "=" not in a]
    settings = deep_merge(read_yaml(Path(config_path)), parse_overrides([a for a in arguments if "=" in a]))
    config = LeakageConfig(**{**settings, "model": model})
    study = Study(config, Path(out), seed=config.seeds[0], resume=True)
    study.build_targets()
    for name in names or list(config.variants):
        result = study.release(name)
        loss = result["loss"]
        print(f"{name}: targets {loss['before']['targets']:.3f} -> {loss['after']['targets']:.3f}, "
              f"reference {loss['before']['reference']:.3f} -> {loss['after']['reference']:.3f}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
