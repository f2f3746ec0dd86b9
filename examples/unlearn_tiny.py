"""Unlearn a forget set from a model whose training data is known, with the Python API, on a CPU.

Builds small splits, pre-trains a `micro` model on every forget and retain split, unlearns the
code domain's forget set with gradient ascent + in-domain gradient descent (`ga_gd_in`), and
prints, before and after: perplexity on the forget set and on the unseen approximate set, the
approximate-retraining gap log(PPL forget / PPL approximate) (0 = looks unseen; unlearning stops
there), and the Min-K% membership-inference AUC of forget against approximate (0.5 = chance).

    python examples/unlearn_tiny.py [OUT]      # default OUT: runs/example-unlearn; ~2 min on 2 cores
"""

import sys
from pathlib import Path

import lethe

SIZES = {"forget": 8, "retain": 16, "approximate": 8, "general_retain": 16, "general_eval": 8}


def main(out: Path) -> None:
    lethe.build_assets(lethe.AssetsConfig(model=False))  # the corpora, once; cached afterwards
    data = out / "data"
    lethe.build_data(lethe.DataBuildConfig(out=data, sizes=SIZES), overwrite=True)
    pretrain = lethe.pretrain_config("micro", {"data": str(data), "train": {"epochs": 8}})
    lethe.pretrain(pretrain, out / "pretrain", overwrite=True)

    # stop_at_approximate: evaluate every step and stop once the forget set looks as unseen as the
    # approximate set (the approximate-retraining yardstick), instead of pushing past it
    config = lethe.UnlearnConfig(
        model=str(out / "pretrain"), data=data, domain="code", method="ga_gd_in", stop_at_approximate=True,
        train=lethe.TrainConfig(lr=1e-3, epochs=5, batch_size=8, warmup_ratio=0, eval_every=1))
    results = lethe.unlearn(config, out / "unlearn", overwrite=True)

    print(f"\n{'':8} {'forget PPL':>11} {'approx PPL':>11} {'gap':>7} {'Min-K% AUC':>11}")
    for stage in ("before", "after"):
        m = results[stage]
        print(f"{stage:8} {m['ppl']['forget']:11.1f} {m['ppl']['approximate']:11.1f} "
              f"{m['approx_gap']['log_ppl_ratio']:7.3f} {m['mia']['auc']:11.3f}")
    train = results["train"]
    print(f"\n{train['steps']} unlearning steps (stopped: {train['stopped']}); run directories under {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/example-unlearn"))
