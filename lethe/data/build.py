"""`lethe data build`: corpora → deduplicated, seeded splits on disk, with a size table."""

from __future__ import annotations

import logging
from pathlib import Path

from lethe.config import DataBuildConfig, lethe_home
from lethe.data.splits import assign_splits, built_domains, fully_given, given_splits, load_corpora, write_splits
from lethe.runs import Run

log = logging.getLogger("lethe")


def _corpus_files(config: DataBuildConfig) -> dict[str, Path]:
    wanted = [d for d in built_domains(config) if d not in config.sources and d not in fully_given(config)]
    if not wanted:
        return {}
    from lethe.assets.corpora import build_corpora

    return build_corpora(lethe_home(), wanted)


def count_tokens(texts: list[str], tokenizer_name: str) -> int:
    from lethe.models import gpt2_tokenizer, load_model

    tokenizer = gpt2_tokenizer() if tokenizer_name == "gpt2" else load_model(tokenizer_name)[1]
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def build_data(config: DataBuildConfig, *, overwrite: bool = False) -> dict:
    """`lethe data build`: write the splits to `config.out`; returns documents, characters and tokens per split."""
    with Run.start(config.out, "data build", config, overwrite=overwrite, seed=config.seed) as run:
        corpora = load_corpora(config, _corpus_files(config))
        splits, dedup = assign_splits(corpora, config, given_splits(config))
        paths = write_splits(config.out, splits)
        run.record_data({name: path for name, path in paths.items()})
        table = {name: {"documents": len(docs), "characters": sum(len(d.text) for d in docs),
                        "tokens": count_tokens([d.text for d in docs], config.report_tokenizer)}
                 for name, docs in splits.items()}
        results = {"splits": table, "tokenizer": config.report_tokenizer,
                   "dropped": {"exact_duplicates": dedup.dropped_exact, "near_duplicates": dedup.dropped_near},
                   "corpus_documents": {domain: len(docs) for domain, docs in corpora.items()}}
        run.write_results(results)
    return results
