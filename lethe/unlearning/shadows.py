"""Shadow models of the known-data setup, for the per-example unlearning MIA (lethe/unlearning/u_mia.py).

The candidates are one domain's forget and approximate documents; `balanced_keep` deals each to exactly K/2 of K
shadows. Shadow k sees the data through a view: a data directory whose <domain>/forget holds the candidates it was
dealt and <domain>/approximate the others, every other split as it is. It is trained on that view with the recipe
that made the target's membership known: a `lethe pretrain` run's pre-training (its seed and tokenizer, as exact
retraining repeats it) or a `lethe target` run's continued training of its base model. So a shadow differs from
the target only in which candidates it saw. The trained shadows do not depend on the method and serve every
method; each method then unlearns every shadow on its view with `lethe unlearn`, the run the target's unlearning
was, so a shadow forgets what it saw as the target forgot its forget set.

Layout under `where` (u_mia/<domain>/ of a study or an eval run): references.json (models, candidates, keep),
views/shadow-<k>/, shadows/shadow-<k>/ (the trained run), unlearned/<method>/shadow-<k>/ (its `lethe unlearn`
run), each run's candidates/ (its scores of every candidate chunk). A finished run is read back, never redone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lethe.attacks.per_example import balanced_keep
from lethe.attacks.reference_victims import write_manifest
from lethe.config import ChunkConfig, PretrainConfig, TargetConfig, UMiaConfig, UnlearnConfig, read_yaml, resolve
from lethe.data.documents import Document, read_documents, write_documents
from lethe.data.roles import RunData, role_splits
from lethe.data.splits import find_splits, load_splits
from lethe.errors import LetheError, TrainingDiverged
from lethe.models import load_model, model_context, resolve_model_path
from lethe.perplexity import score_chunk_sets
from lethe.runs import Run, finished, read_json
from lethe.scoring import TokenScores

log = logging.getLogger("lethe")


def known_origin(model: str) -> tuple[str, Path]:
    """The run that made the model's membership known: ("pretrain" or "target", its directory)."""
    from lethe.training.target import target_run

    if (run := target_run(model)) is not None:
        return "target", run
    run_dir = resolve_model_path(model).parent
    if (run_dir / "run.json").is_file() and read_json(run_dir / "run.json").get("command") == "pretrain":
        return "pretrain", run_dir
    raise LetheError(f"u_mia needs a model from `lethe pretrain` or `lethe target` (its recipe and members are "
                     f"known to train shadows with), not {model}")


def candidate_documents(data_dir: Path, domain: str) -> tuple[list[Document], np.ndarray]:
    """The forget documents, then the approximate ones, and which are forget documents (the attack's members)."""
    roles = role_splits(domain)
    splits = load_splits(data_dir, [roles["forget"], roles["approximate"]])
    forget, approximate = splits[roles["forget"]], splits[roles["approximate"]]
    return forget + approximate, np.array([True] * len(forget) + [False] * len(approximate))


def write_view(data_dir: Path, domain: str, candidates: list[Document], kept: np.ndarray, out: Path) -> Path:
    """A data directory like `data_dir` whose forget split holds the kept candidates and approximate the rest."""
    if (out / "done").is_file():
        return out
    roles = role_splits(domain)
    for name, path in find_splits(data_dir).items():
        if name in (roles["forget"], roles["approximate"]):
            documents = [doc for doc, k in zip(candidates, kept, strict=True) if k == (name == roles["forget"])]
        else:
            documents = read_documents(path, name.split("/")[0])
        write_documents(out / f"{name}.jsonl", documents)
    (out / "done").write_text("")
    return out


def train_shadow(origin: str, run_dir: Path, view: Path, out: Path) -> None:
    """One shadow: the origin run's recipe on the view's data."""
    if origin == "pretrain":
        from lethe.training.pretrain import pretrain

        config = resolve(PretrainConfig, read_yaml(run_dir / "config.yaml"),
                         {"data": str(view), "tokenizer_from": str(run_dir / "tokenizer")})
        pretrain(config, out, overwrite=out.exists())
        return
    from lethe.training.target import continued_training, target_splits

    config = resolve(TargetConfig, read_yaml(run_dir / "config.yaml"), {"data": str(view)})
    with Run.start(out, "shadow", config, overwrite=out.exists(), seed=config.train.seed) as run:
        run.record_data(find_splits(view))
        done = continued_training(config, target_splits(config)["target"], run.path)
        run.write_results({"train": done["train"], "members": done["documents"]})


@dataclass
class Shadows:
    """K trained shadows of one domain, and what is needed to unlearn and score them."""

    model: str  # the target, whose known origin the shadows repeat
    where: Path
    data: Path
    domain: str
    records: list[str]  # candidate document ids: forget documents first
    members: np.ndarray  # (N,) True for a forget document
    keep: np.ndarray  # (K, N) True where shadow k was trained on candidate n
    chunk: ChunkConfig  # how the candidates are chunked for scoring: as the target's scores were
    batch_tokens: int
    loading: dict  # load_model's dtype and remote-code settings

    def view(self, k: int) -> Path:
        return self.where / "views" / f"shadow-{k}"

    def trained(self, k: int) -> Path:
        return self.where / "shadows" / f"shadow-{k}"

    def candidate_scores(self, run_dir: Path) -> TokenScores:
        """Every candidate chunk scored by the run's model (once: saved in run_dir/candidates)."""
        where = run_dir / "candidates"
        if not (where / "done").is_file():
            model, tokenizer = load_model(run_dir / "model", **self.loading)
            data = RunData.load(self.data, self.domain, tokenizer, self.chunk, model_context(model))
            score_chunk_sets(model, {"candidates": data.role_chunks("forget") + data.role_chunks("approximate")},
                             self.batch_tokens, tokenizer.pad_token_id, where)
            (where / "done").write_text("")
        return TokenScores.load(where / "candidates")

    def trained_scores(self) -> list[TokenScores]:
        return [self.candidate_scores(self.trained(k)) for k in range(len(self.keep))]

    def unlearned_scores(self, name: str, cell: UnlearnConfig, pretrain_tokens: float | None) -> list[TokenScores]:
        """Each shadow unlearned on its view with `cell`'s method and settings (the target's unlearning run), then
        scored; TrainingDiverged when the method diverges on a shadow."""
        return [self.unlearn_shadow(name, cell, pretrain_tokens, k) for k in range(len(self.keep))]

    def unlearn_shadow(self, name: str, cell: UnlearnConfig, pretrain_tokens: float | None, k: int) -> TokenScores:
        """Shadow k unlearned with `cell`'s settings (once: a finished run is read back), and its candidates' scores."""
        from lethe.unlearning.run import unlearn

        out = self.where / "unlearned" / name / f"shadow-{k}"
        if not finished(out):
            settings = cell.model_dump(mode="json")
            shadow = UnlearnConfig.model_validate(
                {**settings, "model": str(self.trained(k) / "model"), "data": str(self.view(k)),
                 "forget_documents": None, "pretrain_tokens": pretrain_tokens,
                 "eval": {**settings["eval"], "blind": None, "utility": False}})
            unlearn(shadow, out, overwrite=out.exists())
        if read_json(out / "results.json").get("diverged"):  # read back too: a resumed study must not score it
            raise TrainingDiverged(f"{name} left shadow {k} with a non-finite perplexity")
        return self.candidate_scores(out)

    def train(self, k: int) -> None:
        """Shadow k trained on its view (once)."""
        if not finished(self.trained(k)):
            origin, run_dir = known_origin(self.model)
            log.info("u_mia: training shadow %d of %d (%s recipe of %s)", k + 1, len(self.keep), origin, run_dir)
            train_shadow(origin, run_dir, self.view(k), self.trained(k))


def deal_shadows(model: str, data: Path, domain: str, u_mia: UMiaConfig, where: Path, chunk: ChunkConfig,
                 batch_tokens: int, loading: dict) -> Shadows:
    """Deal the candidates and write each shadow's view; nothing trains yet."""
    known_origin(model)
    candidates, members = candidate_documents(data, domain)
    keep = balanced_keep(u_mia.shadows, len(candidates), u_mia.seed)
    shadows = Shadows(model, where, Path(data), domain, [doc.id for doc in candidates], members, keep, chunk,
                      batch_tokens, loading)
    manifest = {"models": [f"shadows/shadow-{k}/model" for k in range(len(keep))], "records": shadows.records,
                "keep": keep.tolist()}
    if (where / "references.json").is_file() and read_json(where / "references.json") != manifest:
        raise LetheError(f"{where} holds shadows dealt otherwise (u_mia.shadows, u_mia.seed or the candidates "
                         "changed); start a new run with --out")
    write_manifest(where / "references.json", manifest["models"], shadows.records, keep)
    for k in range(len(keep)):
        write_view(data, domain, candidates, keep[k], shadows.view(k))
    return shadows


def train_shadows(model: str, data: Path, domain: str, u_mia: UMiaConfig, where: Path, chunk: ChunkConfig,
                  batch_tokens: int, loading: dict) -> Shadows:
    """Deal the candidates, write the views and train every shadow not trained yet."""
    shadows = deal_shadows(model, data, domain, u_mia, where, chunk, batch_tokens, loading)
    for k in range(len(shadows.keep)):
        shadows.train(k)
    return shadows
