"""`lethe eval bpb`: bits per UTF-8 byte of each split, a likelihood that compares models across tokenizers."""

from __future__ import annotations

import math
from pathlib import Path

from lethe.config import EvalPplConfig
from lethe.recipes import DATA, Flag, comma_list, recipe
from lethe.reporting.document import Section, Table
from lethe.reporting.records import RunRecord
from lethe.reporting.sections import fmt


def bits_per_byte(config: EvalPplConfig, out: Path, *, overwrite: bool = False) -> dict:
    """Σ NLL / ln 2 / Σ bytes over the predicted tokens of each split (a chunk's first token is not predicted)."""
    from lethe.perplexity import score_configured_splits
    from lethe.runs import Run, write_json

    with Run.start(out, "eval bpb", config, overwrite=overwrite) as run:
        tokenizer, scores = score_configured_splits(config, run)
        results = {"model": str(config.model), "bits_per_byte": {}, "bytes": {}, "tokens": {}}
        for name, split in scores.items():
            texts = tokenizer.batch_decode([split.target_ids[start:end] for start, end
                                            in zip(split.offsets[:-1], split.offsets[1:], strict=True)])
            sizes = [len(text.encode("utf-8")) for text in texts]
            write_json(run.scores_dir / f"{name}.bytes.json", dict(zip(split.ids, sizes, strict=True)))
            nats = -float(split.logprob.astype("float64").sum())
            results["bits_per_byte"][name] = nats / math.log(2) / sum(sizes)
            results["bytes"][name], results["tokens"][name] = sum(sizes), int(split.offsets[-1])
        run.write_results(results)
    return results


def summary(results: dict, config: EvalPplConfig, out: Path | None) -> None:
    for name, bpb in results["bits_per_byte"].items():
        tokens, size = results["tokens"][name], results["bytes"][name]
        print(f"{name:<24}{bpb:>8.3f} bits/byte  ({tokens:,} tokens, {size:,} bytes)")


def report(record: RunRecord, section: Section) -> None:
    r = record.results
    section.headline = ", ".join(f"{name} {bpb:.3f}" for name, bpb in r["bits_per_byte"].items()) + " bits/byte"
    section.tables.append(Table(["split", "bits per byte", "tokens", "bytes"],
                                [[name, fmt(bpb), fmt(r["tokens"][name]), fmt(r["bytes"][name])]
                                 for name, bpb in r["bits_per_byte"].items()], f"model {r['model']}"))


recipe(command="eval bpb", help="bits per UTF-8 byte of each split (comparable across tokenizers)",
       schema=EvalPplConfig, run=bits_per_byte,
       flags={"model": Flag("model directory, run directory or alias"), "data": Flag(DATA),
              "splits": Flag("splits to score, e.g. code/forget,code/approximate", parse=comma_list)},
       summary=summary, report=report)
