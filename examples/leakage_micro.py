"""Forget to Flourish in miniature, with the Python API, on a CPU: does a poisoned release make
a victim's fine-tuning leak more?

Pre-trains a `micro` model, builds a fine-tuning set with injected synthetic PII records (members)
and records from the same generator it never holds (non-members), then for two releases — the
clean model (`benign`) and one poisoned by bounded unlearning of noisy copies of every record
(`forget_to_flourish`) — fine-tunes the release with LoRA on the victim's data and runs the
membership-inference attacks on members against non-members. Prints each attack's ROC-AUC. (On
models this small the paper's gain does not show; see docs/leakage.md.) The steps are spelled out
to show the API; `lethe.experiment_leakage` runs the same as a resumable grid of releases × modes.

    python examples/leakage_micro.py [OUT]     # default OUT: runs/example-leakage; ~3 min on 2 cores
"""

import sys
from pathlib import Path

import lethe

SIZES = {"forget": 8, "retain": 16, "approximate": 8, "general_retain": 16, "general_eval": 8}
ATTACKS = ["loss", "zlib", "min_k", "reference_model"]


def main(out: Path) -> None:
    lethe.build_assets(lethe.AssetsConfig(model=False))
    data = out / "data"
    lethe.build_data(lethe.DataBuildConfig(out=data, sizes=SIZES), overwrite=True)
    lethe.pretrain(lethe.pretrain_config("micro", {"data": str(data), "train": {"epochs": 8}}), out / "pretrain",
                   overwrite=True)
    pii = out / "pii"
    lethe.build_pii(lethe.PiiConfig(out=pii, data=data, members=8, nonmembers=8, repetitions=3, prefix_chars=100,
                                    validation_docs=2), overwrite=True)

    aucs, target_loss = {}, {}
    for variant in ("benign", "forget_to_flourish"):
        released = out / variant / "released"
        release = lethe.poison(lethe.PoisonConfig(
            model=str(out / "pretrain"), variant=variant, targets=str(pii / "targets_all.jsonl"),
            reference="general/retain", data=data, chunk={"length": 64},
            train={"lr": 3e-4, "epochs": 4, "batch_size": 4, "warmup_ratio": 0.0, "scheduler": "constant"}),
            released, overwrite=True)
        target_loss[variant] = release["loss"]["after"]["targets"]
        victim = out / variant / "victim"
        lethe.finetune(lethe.FinetuneConfig(
            model=str(released), data=str(pii / "finetune.jsonl"), validation=str(pii / "validation.jsonl"),
            mode="lora", chunk={"length": 64}, train={"lr": 2e-3, "epochs": 3, "batch_size": 4}),
            victim, overwrite=True)
        mia = lethe.attack_mia(lethe.MiaConfig(
            model=str(victim), members=str(pii / "targets_member.jsonl"),
            nonmembers=str(pii / "targets_nonmember.jsonl"), reference_model=str(released), attacks=ATTACKS,
            bootstrap=100, chunk={"length": 64, "max_chunks_per_doc": 1}), out / variant / "mia", overwrite=True)
        aucs[variant] = {name: metrics["auc"] for name, metrics in mia["attacks"].items()}

    print("\nrelease's mean loss on the targets: " + ", ".join(f"{v} {loss:.3f}" for v, loss in target_loss.items()))
    print(f"MIA ROC-AUC after LoRA fine-tuning (members vs non-members, 0.5 = chance)\n{'attack':16}"
          + "".join(f"{variant:>20}" for variant in aucs))
    for attack in ATTACKS:
        print(f"{attack:16}" + "".join(f"{aucs[variant][attack]:20.3f}" for variant in aucs))
    print(f"\nrun directories under {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/example-leakage"))
