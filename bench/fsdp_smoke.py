#!/usr/bin/env python
"""FSDP smoke test: a few ga_gd_in steps through Lethe's Trainer on a random-weight Llama-style model, then the whole
model saved; bench/gpu.py runs it under `accelerate launch` with configs/accelerate/fsdp.yaml and alone, and
compares the two saved models' losses on held-out tokens.

    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 1 bench/fsdp_smoke.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STEPS = 3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", help="a size of bench/gpu.py (small, 135m, 1b)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch
    from torch.distributed.tensor import DTensor

    from bench.gpu import SIZES, build_model, random_groups
    from lethe.config import MethodArgs, TrainConfig
    from lethe.engine import Trainer
    from lethe.unlearning.methods import MethodContext, methods

    size = SIZES[args.size]
    model = build_model(args.size, "cuda" if torch.cuda.is_available() else "cpu")
    groups = random_groups(size, STEPS)
    # float32 and a high rate: three steps move the weights far beyond rounding, identically with or without FSDP
    config = TrainConfig(max_steps=STEPS, batch_size=size.batch, lr=1e-3, warmup_ratio=0, scheduler="constant",
                         log_every=1, seed=0)
    trainer = Trainer(model, methods.get("ga_gd_in")(MethodContext(reference=None), MethodArgs()), groups, config,
                      pad_id=0)
    result = trainer.fit()
    sharded = any(isinstance(p, DTensor) for p in trainer.model.parameters())
    trainer.save_model(args.out / "model")
    if trainer.accelerator.is_main_process:
        (args.out / "smoke.json").write_text(json.dumps({
            "distributed_type": str(trainer.accelerator.distributed_type).split(".")[-1],
            "processes": trainer.accelerator.num_processes, "sharded": sharded, "steps": result.steps,
            "losses": [h["loss"] for h in result.history if "loss" in h]}))


if __name__ == "__main__":
    main()
