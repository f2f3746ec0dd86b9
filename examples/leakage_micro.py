"""Forget to Flourish in miniature, with the Python API, on a CPU, beside its positive control.

Pre-trains a `micro` model and draws PII records from one generator, dealt at random into members
(each copy its own fine-tuning example, mixed with filler text) and non-members. Three releases —
the clean model (`benign`), Wen et al.'s privacy backdoor (the positive control: it lowers the
targets' loss before release) and Forget to Flourish (bounded ascent on noisy copies of every
record) — are each fine-tuned by the victim on the same data and attacked on the same records.
Prints each attack's AUC per release and each release's ΔAUC against benign with its paired 95%
bootstrap interval, after the blind baseline (can a text classifier tell members from
non-members without the model?). The steps are spelled out to show the API;
`lethe.experiment_leakage` runs the same as a resumable grid of releases × modes × seeds.

    python examples/leakage_micro.py [OUT]     # default OUT: runs/example-leakage; ~3 min on 2 cores
"""

import json
import sys
from pathlib import Path

import lethe
from lethe.attacks.blind import blind_baseline
from lethe.attacks.metrics import paired_auc_difference
from lethe.leakage.analysis import attack_scores

SIZES = {"forget": 8, "retain": 16, "approximate": 8, "general_retain": 16, "general_eval": 8}
ATTACKS = ["loss", "zlib", "min_k", "reference_model"]
RELEASES = {"benign": {}, "privacy_backdoor": {}, "forget_to_flourish": {"bound": {"on_cross": "project"}}}


def main(out: Path) -> None:
    lethe.build_assets(lethe.AssetsConfig(model=False))
    data = out / "data"
    lethe.build_data(lethe.DataBuildConfig(out=data, sizes=SIZES), overwrite=True)
    lethe.pretrain(lethe.pretrain_config("micro", {"data": str(data), "train": {"epochs": 8}}), out / "pretrain",
                   overwrite=True)
    pii = out / "pii"
    lethe.build_pii(lethe.PiiConfig(out=pii, data=data, members=24, nonmembers=24, repetitions=2, filler_docs=8,
                                    validation_docs=2), overwrite=True)
    texts = [[json.loads(line)["text"] for line in (pii / f"targets_{role}.jsonl").read_text().splitlines()]
             for role in ("member", "nonmember")]
    blind = blind_baseline(*texts, permutations=50)

    aucs, scores = {}, {}
    for variant, settings in RELEASES.items():
        released = out / variant / "released"
        lethe.poison(lethe.PoisonConfig(
            model=str(out / "pretrain"), variant=variant, targets=str(pii / "targets_all.jsonl"),
            reference="general/retain", data=data, chunk={"length": 64}, bound={"epsilon": 1.1, **settings.get(
                "bound", {})},
            train={"lr": 3e-4, "epochs": 4, "batch_size": 4, "warmup_ratio": 0.0, "scheduler": "constant"}),
            released, overwrite=True)
        victim = out / variant / "victim"
        lethe.finetune(lethe.FinetuneConfig(
            model=str(released), data=str(pii / "finetune.jsonl"), validation=str(pii / "validation.jsonl"),
            mode="full", train={"lr": 2e-3, "epochs": 2, "batch_size": 4}), victim, overwrite=True)
        mia = lethe.attack_mia(lethe.MiaConfig(
            model=str(victim), members=str(pii / "targets_member.jsonl"),
            nonmembers=str(pii / "targets_nonmember.jsonl"), reference_model=str(released), attacks=ATTACKS,
            bootstrap=100), out / variant / "mia", overwrite=True)
        aucs[variant] = {name: metrics["auc"] for name, metrics in mia["attacks"].items()}
        scores[variant] = attack_scores(out / variant / "mia")

    print(f"\nblind baseline (members vs non-members from their text alone): AUC {blind['auc']:.3f}, "
          f"permutation null 95% range {blind['ci95'][0]:.3f}–{blind['ci95'][1]:.3f}")
    print(f"MIA ROC-AUC after full fine-tuning (members vs non-members, 0.5 = chance)\n{'attack':16}"
          + "".join(f"{variant:>20}" for variant in aucs))
    for attack in ATTACKS:
        print(f"{attack:16}" + "".join(f"{aucs[variant][attack]:20.3f}" for variant in aucs))
    print("\nΔAUC against benign on the same records (paired bootstrap, 95% interval)")
    for variant in ("privacy_backdoor", "forget_to_flourish"):
        for attack in ATTACKS:
            ours, theirs = scores[variant][attack], scores["benign"][attack]
            c = paired_auc_difference(ours["members"][1], ours["nonmembers"][1], theirs["members"][1],
                                      theirs["nonmembers"][1])
            print(f"{variant:20}{attack:16}{c['delta_auc']:+8.3f}  [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]")
    print(f"\nrun directories under {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/example-leakage"))
