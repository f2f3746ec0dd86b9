"""Downstream utility with lm-evaluation-harness, offline, on tasks built from held-out local text.

`build_utility_tasks` writes two multiple-choice tasks per domain (scored by log-likelihood):

* ``lethe_cloze_<domain>`` (LAMBADA-like): a 40-80 word passage; the true next word against three
  words of similar frequency in the same documents, in the same letter case.
* ``lethe_continuation_<domain>`` (HellaSwag-like): 2-3 sentences or lines (at least 8 words) and
  2-6 words into the next; the true next 15-25 words against spans of the same word count starting
  at random words of other documents. Cutting mid-sentence binds the answer to its context: cut at
  a sentence end, SmolLM2-135M scored 0.30 (chance 0.25) on two domains: any new sentence fits.

Items come only from the documents given, so passing held-out splits (``general/eval``, each
domain's ``approximate``) keeps the forget set out by construction, and ``exclude=`` drops items
quoting boilerplate those splits still share with it. Every item records its document id and
character offsets: ``text[start:end] == context`` and the answer is what follows. The tag
``lethe_utility`` runs them all. `run_utility` evaluates a loaded model on them in-process.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

from lethe.data.documents import Document
from lethe.errors import LetheError

log = logging.getLogger("lethe")

TAG = "lethe_utility"
KINDS = ("cloze", "continuation")
MIN_ITEMS = 10  # fewer items than this make a task too noisy to report
MAX_CONTEXT_CHARS = 600  # bounds on characters too: some "words" (code, LaTeX, chemistry) are 80 characters
MAX_ANSWER_CHARS = 250
_TOKEN = re.compile(r"\S+")
_CLOZE_WORD = re.compile(r"([A-Za-z]{3,20})[.,;:!?'\")\]]*")  # a whole word, maybe with closing punctuation
_WORD = re.compile(r"\w+")
_SEGMENT_END = re.compile(r"(?<=[.!?])[ \t]+|\n\s*")  # sentence ends and line breaks


def _task_name(kind: str, domain: str) -> str:
    return f"lethe_{kind}_{re.sub(r'[^a-z0-9]+', '_', domain.lower()).strip('_')}"


def _tokens(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in _TOKEN.finditer(text)]


def _cased(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word.capitalize() if like[0].isupper() else word


def _cloze_items(docs: list[Document], rng: random.Random) -> list[dict]:
    counts = Counter(m.group(1).lower() for doc in docs for m in map(_CLOZE_WORD.fullmatch, _TOKEN.findall(doc.text))
                     if m)
    vocab = sorted(counts, key=lambda word: (-counts[word], word))
    if len(vocab) < 8:
        return []
    rank = {word: index for index, word in enumerate(vocab)}
    window = max(8, len(vocab) // 50)
    items = []
    for doc in docs:
        spans = _tokens(doc.text)
        begin = 0
        while True:
            target = begin + rng.randint(40, 70)
            while target < min(len(spans), begin + 80) and not _CLOZE_WORD.fullmatch(doc.text[slice(*spans[target])]):
                target += 1
            if target >= min(len(spans), begin + 80):
                break
            word = _CLOZE_WORD.fullmatch(doc.text[slice(*spans[target])]).group(1)
            r = rank[word.lower()]
            near = [w for w in vocab[max(0, r - window): r + window + 1] if w != word.lower()]
            distractors = [_cased(w, word) for w in rng.sample(near, 3)]
            end = spans[target][0]
            first = next(j for j in range(begin, target + 1) if end - spans[j][0] <= MAX_CONTEXT_CHARS)
            if target - first >= 30:  # a passage of long "words" keeps its last 600 characters if 30+ words
                items.append(_item(doc, spans[first][0], end, word, distractors, rng))
            begin = target + 1
    return items


def _segment_tokens(text: str, tokens: list[tuple[int, int]]) -> list[int]:
    """Indices of the tokens that begin a sentence or a line."""
    starts = {0} | {m.end() for m in _SEGMENT_END.finditer(text)}
    return [index for index, (start, _) in enumerate(tokens) if index == 0 or start in starts]


def _span(tokens: list[tuple[int, int]], first: int, words: int) -> tuple[int, int] | None:
    """Characters of `words` tokens from token `first`, or None where they run out or run too long."""
    if first + words > len(tokens) or tokens[first + words - 1][1] - tokens[first][0] > MAX_ANSWER_CHARS:
        return None
    return tokens[first][0], tokens[first + words - 1][1]


def _continuation_items(docs: list[Document], rng: random.Random) -> list[dict]:
    """Context: 2-3 sentences/lines and a few words into the next, so the true continuation is bound to it."""
    tokens = {doc.id: _tokens(doc.text) for doc in docs}
    docs = [doc for doc in docs if len(tokens[doc.id]) >= 60]
    if len(docs) < 2:
        return []
    items = []
    for doc in docs:
        toks, others = tokens[doc.id], [other for other in docs if other.id != doc.id]
        segments, i = _segment_tokens(doc.text, toks), 0
        while i < len(segments):
            k = i + rng.randint(2, 3)
            while k < len(segments) and segments[k] - segments[i] < 8 and k - i < 8:
                k += 1
            if k >= len(segments):
                break
            cut = segments[k] + rng.randint(2, 6)  # the words after the cut complete a sentence or line
            length = rng.randint(15, 25)
            if cut + length > len(toks):
                break
            first = next((j for j in range(segments[i], cut)
                          if cut - j <= 100 and toks[cut][0] - toks[j][0] <= MAX_CONTEXT_CHARS), cut)
            answer = _span(toks, cut, length)
            if cut - first < 8 or answer is None:
                i = k
                continue
            truth = doc.text[slice(*answer)]
            seen = {" ".join(truth.split())}
            distractors: list[str] = []
            pool = rng.sample(others, len(others))
            for attempt in range(30):
                other = pool[attempt % len(pool)]
                span = _span(tokens[other.id], rng.randrange(len(tokens[other.id])), length)
                text = other.text[slice(*span)] if span else ""
                if text and " ".join(text.split()) not in seen:
                    seen.add(" ".join(text.split()))
                    distractors.append(text)
                    if len(distractors) == 3:
                        items.append(_item(doc, toks[first][0], answer[0], truth, distractors, rng))
                        break
            i = next((j for j, t in enumerate(segments) if t >= cut + length), len(segments))
    return items


def _item(doc: Document, start: int, end: int, answer: str, distractors: list[str], rng: random.Random) -> dict:
    choices = [answer, *distractors]
    rng.shuffle(choices)
    return {"context": doc.text[start:end], "choices": choices, "label": choices.index(answer),
            "doc_id": doc.id, "start": start, "end": end}


def _task_yaml(name: str, data: Path) -> str:
    metrics = "".join(f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n"
                      for m in ("acc", "acc_norm"))
    return (f"task: {name}\ntag:\n  - {TAG}\ndataset_path: json\ndataset_kwargs:\n"
            f"  data_files:\n    test: {json.dumps(str(data))}\ntest_split: test\noutput_type: multiple_choice\n"
            "doc_to_text: context\ndoc_to_choice: choices\ndoc_to_target: label\ntarget_delimiter: \"\"\n"
            f"metric_list:\n{metrics}metadata:\n  version: 1.0\n")


def _ngrams(text: str, n: int = 8) -> set[str]:
    words = _WORD.findall(text.lower())
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def _shares_text(item: dict, banned: set[str]) -> bool:
    texts = [item["context"] + item["choices"][item["label"]], *item["choices"]]
    return bool(banned) and any(_ngrams(text) & banned for text in texts)


def build_utility_tasks(documents_by_domain: dict[str, list[Document]], out_dir: Path, *, seed: int = 0,
                        per_task: int = 200, exclude: Iterable[Document] = ()) -> Path:
    """Write `lethe_{cloze,continuation}_<domain>` YAMLs + JSONL into out_dir; returns out_dir.

    Domain keys become task-name suffixes (``general/eval`` -> ``general_eval``). A domain with too
    little text for a task (fewer than MIN_ITEMS items, or one document for continuation) is skipped
    with a warning. Tasks left over from an earlier build in out_dir are removed. Held-out splits can
    still share boilerplate (licence headers) with the forget set: pass it as `exclude` to drop every
    item whose context or answer shares an 8-word sequence with those documents.
    """
    exclude = list(exclude)
    banned = set().union(*(_ngrams(doc.text) for doc in exclude))
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("lethe_cloze_*"), *out_dir.glob("lethe_continuation_*")]:
        if old.suffix in {".yaml", ".jsonl"}:
            old.unlink()
    builders = {"cloze": _cloze_items, "continuation": _continuation_items}
    manifest: dict[str, dict] = {}
    for domain, documents in documents_by_domain.items():
        docs = sorted(documents, key=lambda doc: doc.id)
        for kind in KINDS:
            name = _task_name(kind, domain)
            rng = random.Random(f"{seed}:{name}")
            items = builders[kind](docs, rng)
            clean = [item for item in items if not _shares_text(item, banned)]
            if len(clean) < len(items):
                log.info("utility: %s: dropped %d items that share text with excluded documents",
                         name, len(items) - len(clean))
            items = clean
            if len(items) < MIN_ITEMS:
                log.warning("utility: skipping %s: %d documents give only %d items (need %d)",
                            name, len(docs), len(items), MIN_ITEMS)
                continue
            items = rng.sample(items, min(per_task, len(items)))
            data = out_dir / f"{name}.jsonl"
            data.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
            (out_dir / f"{name}.yaml").write_text(_task_yaml(name, data), encoding="utf-8")
            manifest[name] = {"items": len(items), "documents": len(docs)}
            if len(items) < per_task:
                log.info("utility: %s has %d items (asked for %d)", name, len(items), per_task)
    if not manifest:
        raise LetheError("no utility task could be built: the documents given hold too little text")
    (out_dir / "utility_tasks.json").write_text(
        json.dumps({"seed": seed, "per_task": per_task, "tag": TAG, "excluded_documents": len(exclude),
                    "tasks": manifest}, indent=2) + "\n")
    return out_dir


class _CountTruncations(logging.Filter):
    """lm-eval warns once per over-long request; count them and report once instead."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "exceeds model's maximum length" in record.getMessage():
            self.count += 1
            return False
        return True


def _quiet_lm_eval() -> None:
    for name in ("lm_eval", "lm-eval", "evaluate"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import datasets

    datasets.disable_progress_bars()


def run_utility(model, tokenizer, task_dir: Path, *, tasks: list[str] | None = None, limit: int | None = None,
                batch_size: int = 8) -> dict[str, dict[str, float]]:
    """Evaluate an already-loaded model on the tasks in task_dir (default: all, via the tag).

    Returns ``{task: {"acc", "acc_norm", "n"}}`` and ``"mean"`` (unweighted over tasks; ``n`` summed).
    """
    try:
        import lm_eval
        import lm_eval.evaluator
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise LetheError("lm-evaluation-harness is not installed; run `pip install lm-eval`") from None
    _quiet_lm_eval()
    task_dir = Path(task_dir).resolve()
    if not any(task_dir.glob("lethe_*.yaml")):
        raise LetheError(f"{task_dir} holds no utility tasks; build them with build_utility_tasks")
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    tasks = list(tasks or [TAG])
    unknown = [name for name in tasks if name not in manager.all_tasks]
    if unknown:
        known = ", ".join(sorted(manager.all_tasks))
        raise LetheError(f"unknown utility task {unknown[0]!r} in {task_dir} (known: {known})")
    was_training = model.training
    hflm_log = logging.getLogger("lm_eval.models.huggingface")
    level = hflm_log.level
    hflm_log.setLevel(logging.ERROR)  # drops the warning that a model object (not a name) was passed
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    finally:
        hflm_log.setLevel(level)
    truncated = _CountTruncations()
    hflm_log.addFilter(truncated)
    try:
        with ExitStack() as stack:  # skip `git describe` in the cwd and torch's env probe: slow, noisy
            for name in ("get_git_commit_hash", "add_env_info"):
                if hasattr(lm_eval.evaluator, name):
                    stack.enter_context(mock.patch.object(lm_eval.evaluator, name, lambda *args: None))
            output = lm_eval.simple_evaluate(
                model=lm, tasks=tasks, task_manager=manager, limit=limit, bootstrap_iters=0, log_samples=False,
                random_seed=None, numpy_random_seed=None, torch_random_seed=None, fewshot_random_seed=None)
    except AssertionError as exc:  # lm-eval asserts that each choice fits the model's context
        raise LetheError(f"lm-eval rejected an item of {task_dir} (a choice longer than the model's "
                         f"{lm.max_length}-token context?): {exc or 'assertion failed'}") from exc
    finally:
        hflm_log.removeFilter(truncated)
        model.train(was_training)
    if truncated.count:
        log.warning("utility: %d requests were longer than the model's %d-token context and lost their start",
                    truncated.count, lm.max_length)
    results: dict[str, dict[str, float]] = {}
    for name, metrics in sorted(output["results"].items()):
        if "acc,none" not in metrics:
            continue  # a tag or group entry
        count = output.get("n-samples", {}).get(name, {}).get("effective")
        results[name] = {"acc": float(metrics["acc,none"]), "acc_norm": float(metrics["acc_norm,none"]),
                         "n": int(count if count is not None else metrics.get("samples", 0))}
    if results:
        results["mean"] = {key: sum(r[key] for r in results.values()) / len(results) for key in ("acc", "acc_norm")}
        results["mean"]["n"] = sum(r["n"] for name, r in results.items() if name != "mean")
    return results
