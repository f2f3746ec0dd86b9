"""`lethe pretrain`: a small model trained from scratch on known splits, so membership is known exactly."""

from __future__ import annotations

from lethe.config import PretrainConfig
from lethe.recipes import ACCEPT_DATA_CHANGE, DATA, RESUME, Flag, lazy, recipe
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import key_values


def configure(layers: list) -> PretrainConfig:
    from lethe.training.pretrain import pretrain_config

    preset = None
    for layer in layers:  # `preset` picks the defaults the other keys are merged over, so it is read first
        preset = layer.pop("preset", preset)
    return pretrain_config(preset or "tiny", *layers)


def summary(results: dict, config: PretrainConfig, out) -> None:
    from lethe.tables import format_ppl_table

    train = results["train"]
    print(f"trained {results['model']['parameters'] / 1e6:.2f}M parameters: {train['steps']} steps, "
          f"{train['tokens']:,} tokens in {train['seconds']:.0f} s ({train['tokens_per_second']:,.0f} tok/s)")
    print(format_ppl_table(results["ppl"]))
    print(f"\nmodel saved to {results['model']['path']}")


def ppl_table(ppl: dict[str, float]) -> Table:
    from lethe.tables import ppl_rows

    header, rows = ppl_rows(ppl)
    return Table(header, rows, "perplexity per split: members (forget, retain) should sit below approximate")


def report(record: RunRecord, section: Section) -> None:
    r = record.results
    model, train = r["model"], r["train"]
    section.headline = f"{model['preset']} model, {model['parameters']:,} parameters, {train['steps']} steps"
    section.tables.append(key_values({"preset": model["preset"], "parameters": model["parameters"],
                                      "splits trained on": ", ".join(train["splits"]), "steps": train["steps"],
                                      "tokens": train["tokens"], "seconds": train["seconds"],
                                      "tokens / second": train["tokens_per_second"], "stopped": train["stopped"]},
                                     "training"))
    section.tables.append(ppl_table(r["ppl"]))


recipe(command="pretrain", help="train a small model from scratch on known splits", schema=PretrainConfig,
       run=lazy("lethe.training.pretrain", "pretrain"), configure=configure, switches=RESUME | ACCEPT_DATA_CHANGE,
       flags={"preset": Flag("micro or tiny (default: tiny)"), "data": Flag(DATA)},
       summary=summary, report=report, multi_process=True)
