"""MUSE's sustainability and scalability (Shi et al., 2024): deletion requests that arrive one after another,
and forget sets of growing size.

Sequential: the forget documents, sorted by id, are cut into k requests; request i is unlearned from the model
request i−1 left, and each model is scored on every role so that forgetting is measured on what was asked so far
(and on what was not asked yet), beside utility. Growing: the first share of the documents is unlearned at once
from the original model; the sets are nested, so a larger one holds every smaller one. Each request is a full
`lethe unlearn` run under the study's directory, resumed like any cell.
"""

from __future__ import annotations

import math
from pathlib import Path

from lethe.config import UnlearningStudyConfig
from lethe.data.roles import role_splits
from lethe.errors import LetheError
from lethe.scoring import TokenScores
from lethe.unlearning.evaluation import load_role_scores, log_ppl_ratio, membership


def request_documents(config: UnlearningStudyConfig, domain: str) -> tuple[list[str], dict[str, set[str]]]:
    """The forget documents' ids in request order, and each one's chunk ids."""
    from lethe.unlearning.study import domain_data, original_model

    model, tokenizer = original_model(config)
    chunks = domain_data(config, domain, model, tokenizer).role_chunks("forget")
    by_document: dict[str, set[str]] = {}
    for chunk in chunks:
        by_document.setdefault(chunk.doc_id, set()).add(chunk.id)
    return sorted(by_document), by_document


def sequential_parts(documents: list[str], requests: int) -> list[list[str]]:
    """`requests` contiguous, near-equal parts (the first ones one larger when the count does not divide)."""
    size, extra = divmod(len(documents), requests)
    bounds = [0]
    for i in range(requests):
        bounds.append(bounds[-1] + size + (i < extra))
    return [documents[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def growing_sets(documents: list[str], shares: list[float]) -> list[list[str]]:
    return [documents[: max(1, math.ceil(share * len(documents)))] for share in sorted(shares)]


def measured(scores: dict[str, TokenScores], chunk_ids: set[str], original: dict[str, TokenScores],
             config: UnlearningStudyConfig) -> dict:
    """Forgetting of the documents behind `chunk_ids` and utility, from one model's scores of every role."""
    forgotten = scores["forget"].subset(chunk_ids)
    evaluation = config.unlearn.eval
    return {"forget_ppl": forgotten.perplexity(),
            "forget_ppl_rise": math.log(forgotten.perplexity() / original["forget"].subset(chunk_ids).perplexity()),
            "approx_gap": log_ppl_ratio(forgotten, scores["approximate"]),
            "mia_auc": membership(forgotten, scores["approximate"], evaluation)[str(evaluation.headline_k)]["auc"],
            "general_ppl": scores["general"].perplexity(), "retain_ppl": scores["retain"].perplexity(),
            "utility_ratio": original["general"].perplexity() / scores["general"].perplexity()}


def all_roles_scored(config: UnlearningStudyConfig, domain: str, run_dir: Path) -> dict[str, TokenScores]:
    """The request's model on every role with the whole forget set: its run scored the other roles, and the forget
    documents of its request only, so the whole forget set is scored once more."""
    from lethe.models import load_model
    from lethe.perplexity import score_chunk_sets
    from lethe.unlearning.study import domain_data

    where, forget = run_dir / "scores" / "whole_forget_set", role_splits(domain)["forget"]
    if not (where / "done").is_file():
        model, tokenizer = load_model(run_dir / "model")
        chunks = domain_data(config, domain, model, tokenizer).role_chunks("forget")
        score_chunk_sets(model, {forget: chunks}, config.unlearn.eval.batch_tokens, tokenizer.pad_token_id, where)
        (where / "done").write_text("")
    return load_role_scores(run_dir / "scores" / "unlearned", domain) | {"forget": TokenScores.load(where / forget)}


def answer_requests(config: UnlearningStudyConfig, domain: str, out: Path, original: dict[str, TokenScores],
                    methods: list[str], cells: Path) -> dict[str, dict[str, list[dict]]]:
    """Per method: `sequential`, one row per request (forgetting of everything asked so far, of what is still
    pending, and utility), and `growing`, one row per share of the forget set (the share 1 is the study's own
    run in `cells`, when the method has one)."""
    from lethe.unlearning.study import run_cell

    documents, chunks_of = request_documents(config, domain)
    if config.requests.sequential > len(documents):
        raise LetheError(f"requests.sequential: {config.requests.sequential} requests, but {domain}'s forget set has "
                         f"{len(documents)} documents")

    def chunk_ids(docs: list[str]) -> set[str]:
        return set().union(*(chunks_of[d] for d in docs))

    def answered(method: str, run_dir: Path, model: str, before: dict[str, TokenScores],
                 docs: list[str]) -> tuple[dict, dict | None]:
        """One request, from `model` whose scores on every role (the whole forget set) are `before`."""
        narrowed = before | {"forget": before["forget"].subset(chunk_ids(docs))}
        results = run_cell(config, domain, method, run_dir, narrowed,
                           changes={"model": model, "forget_documents": docs})
        if "diverged" in results:
            return {"diverged": results["diverged"]}, None
        scores = all_roles_scored(config, domain, run_dir)
        return {"documents": len(docs), **measured(scores, chunk_ids(docs), original, config),
                "tokens": results["train"]["tokens"], "seconds": results["train"]["seconds"]}, scores

    answers: dict[str, dict[str, list[dict]]] = {}
    for method in methods:
        answer = answers.setdefault(method, {})
        if config.requests.sequential:
            parts, model, scores = sequential_parts(documents, config.requests.sequential), config.model, original
            answer["sequential"] = []
            for number, part in enumerate(parts, 1):
                run_dir = out / method / f"sequential-{number}"
                found, scores = answered(method, run_dir, model, scores, part)
                row = {"request": number, **found}
                answer["sequential"].append(row)
                if scores is None:
                    break  # a diverged request leaves no model for the next one
                asked = [doc for earlier in parts[:number] for doc in earlier]
                pending = [doc for later in parts[number:] for doc in later]
                row["asked_so_far"] = {"documents": len(asked), **measured(scores, chunk_ids(asked), original, config)}
                row["pending_forget_ppl_rise"] = (measured(scores, chunk_ids(pending), original, config)
                                                  ["forget_ppl_rise"] if pending else None)
                model = str(run_dir)
        for share, docs in zip(sorted(config.requests.growing), growing_sets(documents, config.requests.growing),
                               strict=True):
            whole = share == 1 and (cells / method / "model").is_dir()  # the study's own run of this method
            row, _ = answered(method, cells / method if whole else out / method / f"growing-{share:g}", config.model,
                              original, docs)
            answer.setdefault("growing", []).append({"share": share, **row})
    return answers
