"""`lethe demo`: both threat models (unlearning on SmolLM2-135M, then poisoned releases' leakage on a small model it
pre-trains, beside a positive control), ending in an HTML report."""

from __future__ import annotations

from pathlib import Path

from lethe.config import DemoConfig
from lethe.recipes import recipe
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt, key_values


def demo(config: DemoConfig | None = None, out="runs/demo", *, overwrite: bool = False) -> dict:
    """`lethe demo`: unlearning on SmolLM2-135M (or `config.model`), leakage on a small model it pre-trains, ending
    in an HTML report."""
    from lethe.config import resolve
    from lethe.demo import run_demo

    return run_demo(config or resolve(DemoConfig), Path(out), overwrite=overwrite)


def report(record: RunRecord, section: Section) -> None:
    from lethe.attacks.blind import describe

    r = record.results
    u = r["unlearning"]
    section.verdicts = [v["line"] for v in r.get("verdicts", [])]  # demos saved before verdicts have none
    section.headline = (f"{r['model']}: {u['method']} moved the forget/approximate gap {u['before']['gap']:.3f} → "
                        f"{u['after']['gap']:.3f}; {len(r['leakage'])} victim fine-tunings attacked")
    leakage_model = r.get("leakage_model", {})  # demos saved before it ran both halves on `model`
    if leakage_model.get("pretrained_here"):
        section.notes.append(f"The leakage half ran on a {leakage_model['parameters'] / 1e6:.2f}M-parameter "
                             f"{leakage_model['preset']} model pre-trained by the demo, not on {r['model']}: "
                             f"{leakage_model['why']}.")
    columns = {"forget_ppl": "forget PPL", "approximate_ppl": "approximate PPL", "gap": "gap (log ratio)",
               "mink_auc": "Min-K% AUC", "general_ppl": "general PPL"}
    kept = f"; kept step {u['kept_step']}'s model, nearer the mark" if u.get("kept_step") else ""
    stages = (("before", "target"), ("after", "unlearned"), ("retrain", "exact retrain"))
    section.tables.append(Table(["model", *columns.values()],
                                [[label, *(fmt(u[when][key]) for key in columns)] for when, label in stages
                                 if when in u],
                                f"unlearning {u['method']}, {u['steps']} steps (stopped: {u['stopped']}{kept}) from a "
                                "target trained on the forget set; the exact retrain never saw it"))
    if "distance" in u:
        section.tables.append(Table(["model", "forget PPL / retrain's", "PrivLeak", "Min-K% AUC − retrain's"],
                                    [[label, fmt(u["distance"][when]["forget_ppl_ratio"]),
                                      fmt(u["distance"][when]["privleak"]), fmt(u["distance"][when]["mia_auc"])]
                                     for when, label in stages[:2]], "distance to the exact retrain (1, 0, 0: same)"))
    if "blind" in u:
        section.notes.append(describe(u["blind"]).replace("Blind baseline", "Blind baseline of the Min-K% samples"))
    attacks = sorted({key for row in r["leakage"].values() for key in row if key.endswith("_auc")})
    section.tables.append(Table(["release / mode", *(a.removesuffix("_auc") + " AUC" for a in attacks), "NSR",
                                 "validation PPL"],
                                [[name, *(fmt(row.get(a)) for a in attacks), f"{row['nsr']}/{row['targets']}",
                                  fmt(row["val_ppl"])] for name, row in r["leakage"].items()],
                                "the victim's fine-tuned model attacked: membership inference on the PII records, "
                                "secrets extracted by greedy decoding"))
    section.tables.append(key_values({f"seconds: {k}": v for k, v in r["seconds"].items()}, "wall time"))


# the demo prints its own summary as it goes
recipe(command="demo", help="both threat models: unlearning on SmolLM2-135M, then poisoned releases' leakage "
       "beside a positive control on a small model it pre-trains, ending in an HTML report", schema=DemoConfig,
       run=demo, out_default="runs/demo", report=report,
       api_function=demo)
