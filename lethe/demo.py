"""`lethe demo`: the pipeline end to end — assets, splits, known-data pre-training, perplexity."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lethe.assets import build_assets
from lethe.config import AssetsConfig, DemoConfig
from lethe.data.build import build_data
from lethe.pretrain import pretrain
from lethe.report import format_ppl_table, format_split_table
from lethe.runs import Run

log = logging.getLogger("lethe")


def run_demo(config: DemoConfig, out: Path, *, overwrite: bool = False) -> dict:
    started = time.time()
    with Run.start(out, "demo", config, overwrite=overwrite) as run:
        build_assets(AssetsConfig(model=False))
        data_dir = run.path / "data"
        splits = build_data(config.data.model_copy(update={"out": data_dir}))
        print(format_split_table(splits))
        pretrain_config = config.pretrain.model_copy(update={"data": data_dir})
        trained = pretrain(pretrain_config, run.path / "pretrain")
        members_below = {domain: all(trained["ppl"][f"{domain}/{s}"] < trained["ppl"][f"{domain}/approximate"]
                                     for s in ("forget", "retain"))
                         for domain in config.data.domains}
        results = {"seconds": time.time() - started, "ppl": trained["ppl"],
                   "members_below_approximate": members_below,
                   "runs": {"data": str(data_dir), "pretrain": str(run.path / "pretrain")}}
        run.write_results(results)
    train = trained["train"]
    print(f"\npre-trained a {trained['model']['preset']} model ({trained['model']['parameters'] / 1e6:.2f}M "
          f"parameters) in {train['seconds']:.0f} s at {train['tokens_per_second']:,.0f} tokens/s")
    print(format_ppl_table(trained["ppl"]))
    verdict = ", ".join(f"{d}: {'yes' if ok else 'NO'}" for d, ok in members_below.items())
    print(f"members (forget, retain) below unseen approximate perplexity — {verdict}")
    print(f"\ndemo finished in {results['seconds']:.0f} s; everything is in {run.path}")
    return results
