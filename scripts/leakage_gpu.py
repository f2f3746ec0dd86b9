"""The leakage study at the paper's scale on one GPU, in one command that writes the study's own schema.

The GPU machine has no network and receives at most 64 MiB, so no pre-trained weights travel: it first
pre-trains a known-data model of SmolLM2-135M's shape (preset smol135, ~125M parameters) on the carried
splits, calibrates the victim on its own seed from the benign release (`lethe experiment calibrate`),
freezes it, then runs `lethe experiment leakage` with configs/leakage/gpu.yaml (500 + 500 records per
seed). Timings go to timings.json beside the study's results.json.

Here, once (a CPU with the project installed):
    lethe data build --config configs/data/gpu.yaml                       # runs/gpu-data, a few MB
    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl -r requirements/gpu-wheels.txt
There (carry runs/gpu-data and .whl):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
    python3 scripts/leakage_gpu.py --data runs/gpu-data --out $OUT/gpu-leakage
    (the strongest attacker: --config configs/leakage/gpu-lira.yaml --working-point)
On a CPU, the same pipeline at a small size (what tests/test_gpu_script.py runs):
    python scripts/leakage_gpu.py --data DATA --out DIR --small
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# --small changes only sizes: the micro model, a handful of records, fewer resamples
SMALL = {
    "pretrain": {"train": {"epochs": 2}, "chunk": {"length": 128}},
    "study": {"seeds": [0, 1], "pii": {"members": 8, "nonmembers": 8, "repetitions": 2, "validation_docs": 2,
                                       "filler_docs": 4},
              "blind": {"permutations": 10}, "bootstrap": 100, "mia": {"bootstrap": 20},
              "poison": {"train": {"epochs": 1, "batch_size": 4}}, "finetune": {"train": {"batch_size": 4}},
              "extract": {"exposure": {"candidates": 10}}, "calibration": {"lr": [1e-3, 3e-3], "epochs": [1]}},
    # with reference victims (configs/leakage/gpu-lira.yaml): the fewest references, one seed, a two-cell dose
    "per_example": {"references": 4, "seeds": [0], "extraction_calibration": {"copies": [1, 12], "epochs": [1]}},
}


def main(argv: list[str] | None = None) -> dict:
    import torch

    from lethe.config import LeakageConfig, deep_merge, read_yaml, resolve
    from lethe.leakage.calibration import calibrate_victim
    from lethe.leakage.extraction_calibration import calibrate_extraction
    from lethe.leakage.study import run_leakage
    from lethe.training.pretrain import pretrain, pretrain_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="splits from `lethe data build --config configs/data/gpu.yaml`")
    parser.add_argument("--out", required=True, help="directory for pretrain/, leakage/ and timings.json")
    parser.add_argument("--config", default=str(ROOT / "configs" / "leakage" / "gpu.yaml"))
    parser.add_argument("--small", action="store_true", help="the same pipeline at a CPU's size")
    parser.add_argument("--working-point", action="store_true",
                        help="after the victim, calibrate the extraction working point and extract there")
    args = parser.parse_args(argv)
    out, gpu = Path(args.out), torch.cuda.is_available()
    bf16 = {"train": {"mixed_precision": "bf16"}} if gpu else {}
    timings: dict = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "small": args.small}

    started = time.time()
    preset = "micro" if args.small else "smol135"
    pretrain(pretrain_config(preset, {"data": args.data, "chunk": {"length": 512}}, bf16,
                             SMALL["pretrain"] if args.small else {}), out / "pretrain")
    timings["pretrain_s"] = round(time.time() - started, 1)

    begin = time.time()
    study = deep_merge(read_yaml(Path(args.config)), {"model": str(out / "pretrain"), "data": args.data,
                                                      "poison": bf16, "finetune": bf16})
    config = resolve(LeakageConfig, study, SMALL["study"] if args.small else {})
    if args.small and config.references:
        config = resolve(LeakageConfig, config.model_dump(mode="json"), SMALL["per_example"])
    # the victim is chosen before any poisoned run, on its own seed, from the baseline release alone
    calibration = calibrate_victim(config, out / "calibrate")
    config = resolve(LeakageConfig, config.model_dump(mode="json"), calibration["freeze"])
    timings["calibrate_s"] = round(time.time() - begin, 1)
    if args.working_point:  # then the extraction's, with the victim's recipe just frozen
        begin = time.time()
        working_point = calibrate_extraction(config, out / "calibrate-extraction")
        config = resolve(LeakageConfig, config.model_dump(mode="json"), working_point["freeze"])
        timings["calibrate_extraction_s"] = round(time.time() - begin, 1)
    begin = time.time()
    results = run_leakage(config, out / "leakage")
    timings["study_s"] = round(time.time() - begin, 1)
    timings["total_s"] = round(time.time() - started, 1)
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(json.dumps(timings))
    return results


if __name__ == "__main__":
    main()
