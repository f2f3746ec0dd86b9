"""Section builders per command: headline tables from results.json, the run's own plots, figures redrawn from
saved numbers where the run drew none."""

from __future__ import annotations

from dataclasses import replace

from lethe.attacks.blind import describe
from lethe.reporting.document import Section, Table
from lethe.reporting.plots import roc_from_scores, saved_png, tradeoff
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt, key_values, register
from lethe.tables import UNLEARNING_HEADER, UNLEARNING_NOTE, ppl_rows, unlearning_rows


def _ppl_table(ppl: dict[str, float]) -> Table:
    header, rows = ppl_rows(ppl)
    return Table(header, rows, "perplexity per split: members (forget, retain) should sit below approximate")


def _saved(record: RunRecord, section: Section, names: list[str], caption: str) -> None:
    for name in names:
        figure = saved_png(record.path / name, f"{name}: {caption}")
        section.add(figure) if figure else section.notes.append(f"{name} is missing from the run directory")


@register("pretrain")
def pretrain(record: RunRecord, section: Section) -> None:
    r = record.results
    model, train = r["model"], r["train"]
    section.headline = f"{model['preset']} model, {model['parameters']:,} parameters, {train['steps']} steps"
    section.tables.append(key_values({"preset": model["preset"], "parameters": model["parameters"],
                                      "splits trained on": ", ".join(train["splits"]), "steps": train["steps"],
                                      "tokens": train["tokens"], "seconds": train["seconds"],
                                      "tokens / second": train["tokens_per_second"], "stopped": train["stopped"]},
                                     "training"))
    section.tables.append(_ppl_table(r["ppl"]))


@register("target")
def target(record: RunRecord, section: Section) -> None:
    r = record.results
    section.headline = (f"{r['model']} trained on {', '.join(r['target']['splits'])} (target) and on "
                        f"{', '.join(r['retrain']['splits'])} (exact retrain)")
    section.tables.append(Table(["model", "splits trained on", "steps", "tokens", "seconds"],
                                [[who, ", ".join(r[who]["splits"]), fmt(r[who]["steps"]), fmt(r[who]["tokens"]),
                                  fmt(r[who]["seconds"])] for who in ("target", "retrain")], "same recipe and seed"))
    splits = list(r["ppl"]["base"])
    section.tables.append(Table(["perplexity", *splits], [[who, *(fmt(r["ppl"][who][s]) for s in splits)]
                                                          for who in r["ppl"]],
                                "the forget set is a member of the target only"))


@register("eval ppl")
def eval_ppl(record: RunRecord, section: Section) -> None:
    r = record.results
    section.headline = f"{len(r['ppl'])} splits scored"
    section.tables.append(_ppl_table(r["ppl"]))
    section.tables.append(Table(["split", "perplexity", "next-token accuracy", "chunks", "tokens"],
                                [[name, fmt(s["ppl"]), fmt(s["accuracy"]), fmt(s["chunks"]), fmt(s["tokens"])]
                                 for name, s in r["splits"].items()], "per split"))


@register("data build")
def data_build(record: RunRecord, section: Section) -> None:
    splits = record.results["splits"]
    section.headline = f"{len(splits)} splits, {sum(s['documents'] for s in splits.values()):,} documents"
    section.tables.append(Table(["split", "documents", "characters", "tokens"],
                                [[name, *(fmt(s[k]) for k in ("documents", "characters", "tokens"))]
                                 for name, s in splits.items()], f"tokens counted with {record.results['tokenizer']}"))


def _unlearning_table(rows: dict[str, dict], caption: str) -> Table:
    return Table(UNLEARNING_HEADER, unlearning_rows(rows), f"{caption}. {UNLEARNING_NOTE}")


def _point(metrics: dict, original: dict) -> tuple[float, float]:
    ppl = metrics["ppl"]
    return ppl["forget"] / ppl["approximate"], original["ppl"]["general"] / ppl["general"]


@register("unlearn")
def unlearn(record: RunRecord, section: Section) -> None:
    r = record.results
    before, after = r["before"], r["after"]
    section.headline = (f"{r['method']} on {r['domain']}: forget PPL {before['ppl']['forget']:.2f} → "
                        f"{after['ppl']['forget']:.2f}, MIA AUC {before['mia']['auc']:.3f} → {after['mia']['auc']:.3f}"
                        + (" (collapsed: says nothing about forgetting)" if after.get("collapsed") else ""))
    if after.get("collapse"):
        section.notes.append(f"The unlearned model has collapsed: {after['collapse']}.")
    section.tables.append(_unlearning_table({"original": before, r["method"]: after}, f"{r['domain']} forget set"))
    if r.get("blind"):
        section.notes.append(describe(r["blind"]))
    section.tables.append(key_values({"steps": r["train"]["steps"], "stopped": r["train"]["stopped"],
                                      **{f"cost: {k}": v for k, v in r["cost"].items()}}, "training and cost"))
    section.add(tradeoff({r["method"]: [_point(before, before), _point(after, before)]},
                         f"{r['method']} on {r['domain']} (original → unlearned)"))


@register("eval unlearning")
def eval_unlearning(record: RunRecord, section: Section) -> None:
    rows = {name: m for name, m in record.results.items() if name != "blind"}
    if record.results.get("blind"):
        section.notes.append(describe(record.results["blind"]))
    section.headline = ", ".join(f"{name}: forget PPL {m['ppl']['forget']:.2f}" for name, m in rows.items())
    section.tables.append(_unlearning_table(rows, "models compared"))
    distances = {name: m["retrain_distance"] for name, m in rows.items() if "retrain_distance" in m}
    if distances:
        keys = list(next(iter(distances.values())))
        section.tables.append(Table(["model", *keys], [[n, *(fmt(d[k]) for k in keys)] for n, d in distances.items()],
                                    "distance to the model retrained without the forget set"))


@register("experiment unlearning", summarises_children=True)
def experiment_unlearning(record: RunRecord, section: Section) -> None:
    from lethe.unlearning.report import SUMMARIES, experiment_table

    r = record.results
    aggregate = {k: v for k, v in r.items() if k not in SUMMARIES}
    section.tables += [replace(experiment_table(aggregate), caption="mean over domains " + ", ".join(r["by_domain"])),
                       *(replace(experiment_table(rows), caption=domain) for domain, rows in r["by_domain"].items())]
    methods = [name for name in aggregate if name not in ("original", "retrained") and "diverged" not in r[name]]
    best = min(methods, key=lambda n: abs(r[n]["approx_gap"]["log_ppl_ratio"]), default=None)
    section.headline = (f"{len(methods)} methods × {len(r['by_domain'])} domains"
                        + (f"; smallest forget–approximate gap: {best}" if best else ""))
    section.notes += [f"{domain}: {describe(blind)}" for domain, blind in r.get("blind", {}).items() if blind]
    for domain, agreement in r.get("yardstick_agreement", {}).items():
        section.notes.append(f"{domain}: approximate yardstick vs exact retraining, Spearman "
                             f"{fmt(agreement['spearman'])} over {agreement['methods']} methods")
    _saved(record, section, ["methods.png"], "forget/approximate perplexity and MIA AUC per method")
    points = {}
    for rows in r["by_domain"].values():
        for name, m in rows.items():
            if "diverged" not in m and name != "retrained":
                points.setdefault(name, []).append(_point(m, rows["original"]))
    section.add(tradeoff(points, "methods × domains (one point per domain)"))


@register("sweep", summarises_children=True)
def sweep(record: RunRecord, section: Section) -> None:
    cells = record.results["cells"]
    done = [c for c in cells if not c["diverged"]]
    collapsed = sum(bool(c.get("collapsed")) for c in cells)
    section.headline = f"{len(cells)} cells, {len(cells) - len(done)} diverged, {collapsed} collapsed"
    rows = [[c["domain"], c["method"], f"{c['lr']:g}", str(c["steps"])]
            + (["diverged", "–", "–"] if c["diverged"] else
               [fmt(c["forget_approx_ratio"]), fmt(c["utility_ratio"]),
                fmt(c["mia_auc"]) + (" (collapsed)" if c.get("collapsed") else "")]) for c in cells]
    section.tables.append(Table(["domain", "method", "lr", "steps", "forget/approx PPL", "utility ratio", "MIA AUC"],
                                rows, "robustness grid (utility ratio: general PPL before / after)"))
    _saved(record, section, ["heatmap_forget_approx_ratio.png", "heatmap_utility_ratio.png"],
           "robustness heatmap over learning rate × steps")
    points = {}
    for c in done:
        points.setdefault(f"{c['method']} ({c['domain']})", []).append((c["forget_approx_ratio"], c["utility_ratio"]))
    section.add(tradeoff(points, "every sweep cell"))


@register("attack mia")
def attack_mia(record: RunRecord, section: Section) -> None:
    from lethe.attacks.mia import mia_table

    r = record.results
    section.tables.append(replace(mia_table(r), caption=f"{r['members']} members vs {r['nonmembers']} non-members; "
                                                        f"model {r['model']}"))
    best = max(r["attacks"].items(), key=lambda item: item[1]["auc"])
    section.headline = f"best attack {best[0]}: AUC {best[1]['auc']:.3f}, TPR@1%FPR {best[1]['tpr@1%fpr']:.3f}"
    saved = [saved_png(record.path / p, f"{p}, as the run saved it") for p in r.get("plots", [])]
    if saved and all(saved):
        section.figures += saved
    elif (record.path / "scores" / "attack_scores.jsonl").is_file():
        section.figures += roc_from_scores(record.path)
    else:
        section.notes.append("no ROC plot and no scores/attack_scores.jsonl to redraw one from")


@register("attack extract")
def attack_extract(record: RunRecord, section: Section) -> None:
    from lethe.attacks.extraction import format_extraction_table

    r = record.results
    section.headline = f"NSR {r['nsr']}/{r['targets']} ({r['rate']:.1%}), token match {r['token_match']:.3f}"
    section.text.append(format_extraction_table(r))
    section.tables.append(Table(["kind", "targets", "NSR", "rate"],
                                [[kind, fmt(k["targets"]), fmt(k["nsr"]), f"{k['rate']:.1%}"]
                                 for kind, k in r["kinds"].items()], "exact extraction per kind of secret"))


@register("poison")
def poison(record: RunRecord, section: Section) -> None:
    r = record.results
    loss, bound, utility = r["loss"], r["bound"], r["utility"]
    section.headline = (f"{r['variant']}: target loss {loss['before']['targets']:.3f} → "
                        f"{loss['after']['targets']:.3f}, reference PPL ×{utility['ratio']:.3f}")
    section.tables.append(Table(["loss", "before", "after"],
                                [[k, fmt(loss["before"][k]), fmt(loss["after"][k])] for k in loss["before"]],
                                f"{r['variant']}: {r['targets']} target chunks, {r['reference_chunks']} reference"))
    section.tables.append(key_values({"reference PPL before": utility["reference_ppl_before"],
                                      "reference PPL after": utility["reference_ppl_after"],
                                      **{f"bound: {k}": v for k, v in bound.items()},
                                      **({"steps": r["train"]["steps"], "stopped": r["train"]["stopped"]}
                                         if r["train"] else {})}, "utility bound"))


@register("finetune")
def finetune(record: RunRecord, section: Section) -> None:
    r = record.results
    val = r["utility"]["val_ppl"]
    section.headline = (f"{r['mode']}{' + DP' if r['dp'] else ''}: validation PPL {val['before']:.2f} → "
                        f"{val['after']:.2f}")
    rows = [["validation", fmt(val["before"]), fmt(val["after"])]]
    if "data_ppl" in r:
        rows.append(["fine-tuning data", fmt(r["data_ppl"]["before"]), fmt(r["data_ppl"]["after"])])
    section.tables.append(Table(["perplexity", "before", "after"], rows,
                                f"{r['mode']} fine-tuning of {r['parameters']['trainable']:,} of "
                                f"{r['parameters']['total']:,} parameters"))
    if r["dp"]:
        section.tables.append(key_values(r["dp"], "DP-SGD (Opacus accounting)"))


@register("experiment leakage", summarises_children=True)
def experiment_leakage(record: RunRecord, section: Section) -> None:
    from lethe.leakage.report import blind_line, leakage_tables, release_lines

    r = record.results
    captions = ["released variant × victim fine-tuning mode: membership inference on the targets (AUC, mean over "
                "seeds), secrets extracted (NSR), validation perplexity",
                f"each variant against the {r['baseline']} release on the same records: ΔAUC and its paired 95% "
                "bootstrap interval",
                "per-record mechanism: how far the release pushed the targets' loss, how far fine-tuning pulled it "
                "down, and the member/non-member gap after fine-tuning"]
    section.tables += [replace(table, caption=caption)
                       for table, caption in zip(leakage_tables(r), captions, strict=True)]
    section.notes += [blind_line(r), *release_lines(r)]
    shown = [(v, m, a, c) for v, modes in r["comparisons"].items() for m, attacks in modes.items()
             for a, c in attacks.items()]
    higher = [item for item in shown if item[3]["ci95"][0] > 0]
    section.headline = (f"{len(shown)} comparisons with {r['baseline']}, {len(higher)} higher with their interval "
                        f"above 0; blind AUC {r['blind']['auc']:.3f}"
                        + (" (targets SEPARABLE without the model)" if r["blind"]["separable"] else ""))
    _saved(record, section, r.get("plots") or [], "as the experiment saved it")


@register("experiment calibrate", summarises_children=True)
def experiment_calibrate(record: RunRecord, section: Section) -> None:
    r = record.results
    chosen, (low, high) = r["chosen"], r["target"]
    section.headline = (f"victim: lr {chosen['lr']:g} × {chosen['epochs']:g} epochs, baseline loss AUC "
                        f"{chosen['loss_auc']:.3f} (wanted {low}–{high})")
    section.tables.append(Table(["lr", "epochs", "loss AUC", "validation PPL", "chosen"],
                                [[f"{c['lr']:g}", f"{c['epochs']:g}", fmt(c["loss_auc"]), fmt(c["val_ppl"]),
                                  "yes" if c == chosen else ""] for c in r["grid"]],
                                f"{r['mode']} fine-tuning of the {r['baseline']} release on calibration seed "
                                f"{r['seed']}"))


@register("demo")
def demo(record: RunRecord, section: Section) -> None:
    r = record.results
    u = r["unlearning"]
    section.headline = (f"{r['model']}: {u['method']} moved the forget/approximate gap {u['before']['gap']:.3f} → "
                        f"{u['after']['gap']:.3f}; {len(r['leakage'])} victim fine-tunings attacked")
    columns = {"forget_ppl": "forget PPL", "approximate_ppl": "approximate PPL", "gap": "gap (log ratio)",
               "mink_auc": "Min-K% AUC", "general_ppl": "general PPL"}
    stages = (("before", "target"), ("after", "unlearned"), ("retrain", "exact retrain"))
    section.tables.append(Table(["model", *columns.values()],
                                [[label, *(fmt(u[when][key]) for key in columns)] for when, label in stages
                                 if when in u],
                                f"unlearning {u['method']}, {u['steps']} steps (stopped: {u['stopped']}) from a target "
                                "trained on the forget set; the exact retrain never saw it"))
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
