"""`lethe unlearn`: one method on one forget set, through the shared training engine, scored before and after."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from lethe.config import UnlearnConfig
from lethe.data.documents import check_disjoint
from lethe.data.roles import RunData, require_forget_set, retain_split
from lethe.engine import Callback, Trainer
from lethe.errors import LetheError, TrainingDiverged
from lethe.models import (
    PRETRAIN_TOKENS,
    count_parameters,
    load_configured,
    model_context,
    resolve_model_path,
)
from lethe.processes import from_main_process, is_main_process
from lethe.runs import Run, read_json
from lethe.scoring import score_chunks
from lethe.training.target import target_run
from lethe.unlearning.evaluation import (
    cost,
    log_ppl_ratio,
    score_roles,
    split_blind,
    unlearning_metrics,
    with_blind_verdicts,
)
from lethe.unlearning.methods import MethodContext, methods
from lethe.unlearning.reference import frozen_reference, uses_reference

log = logging.getLogger("lethe")


def pretrain_record(model: str, configured_tokens: float | None) -> dict | None:
    """Tokens (and seconds) of the training that exact retraining would repeat: the config's, a known alias's
    pre-training, a `lethe target` run's exact retrain, or a Lethe pretrain run."""
    if configured_tokens:
        return {"tokens": configured_tokens}
    if model in PRETRAIN_TOKENS:
        return {"tokens": PRETRAIN_TOKENS[model]}
    if (target := target_run(model)) is not None:  # retraining = the exact retrain's continued training
        train = read_json(target / "results.json")["retrain"]
        return {"tokens": train["tokens"], "seconds": train["seconds"]}
    run_dir = resolve_model_path(model).parent
    if (run_dir / "run.json").is_file() and read_json(run_dir / "run.json").get("command") == "pretrain":
        train = read_json(run_dir / "results.json")["train"]
        return {"tokens": train["tokens"], "seconds": train["seconds"]}
    return None


class StopAtApproximate(Callback):
    """Yao et al.'s yardstick as an early stop: the forget set now looks as unseen as the approximate set, under
    the model before unlearning (`before`: a fixed point) or the model being unlearned (`current`: it moves).

    With `keep_nearer`, the step that crosses the mark and the evaluation before it form a two-sided band: the
    model whose log perplexity ratio lies nearer 0 is the one kept (one large step can overshoot the mark by far
    more than the step before fell short of it). That needs the weights of the evaluation before, kept on the CPU.
    """

    def __init__(self, yardstick: str, keep_nearer: bool = False) -> None:
        self.key = {"before": "log_ppl_ratio_before", "current": "log_ppl_ratio"}[yardstick]
        self.keep_nearer = keep_nearer
        self.model: torch.nn.Module | None = None  # set once the trainer holds it
        self.previous: tuple[int, float, dict] | None = None  # (step, ratio, weights) of the last evaluation short
        self.kept_step: int | None = None  # of the mark, and the step whose model was kept instead of the crossing

    def on_evaluate(self, step, metrics):
        ratio = metrics[self.key]
        crossed = ratio >= 0
        if self.keep_nearer and self.model is not None:
            if not crossed:
                self.previous = (step, ratio, {name: tensor.detach().to("cpu", copy=True)
                                               for name, tensor in self.model.state_dict().items()})
            elif self.previous is not None and -self.previous[1] < ratio:
                self.kept_step = self.previous[0]
                self.model.load_state_dict(self.previous[2])
                log.info("stopped at step %d (log PPL ratio %+.3f); kept the model of step %d (%+.3f), nearer the "
                         "mark", step, ratio, self.previous[0], self.previous[1])
        return crossed


def utility(model, tokenizer, config: UnlearnConfig, data: RunData, task_dir: Path) -> dict | None:
    """lm-eval tasks built from held-out text only (approximate and general eval, minus forget overlap)."""
    if not config.eval.utility:
        return None
    from lethe.downstream_tasks import build_utility_tasks, run_utility

    if not (task_dir / "utility_tasks.json").is_file():
        build_utility_tasks({config.domain: data.role_documents("approximate"),
                             "general": data.role_documents("general")},
                            task_dir, seed=config.eval.seed, per_task=config.eval.utility_limit or 200,
                            exclude=data.role_documents("forget"))
    return run_utility(model, tokenizer, task_dir, limit=config.eval.utility_limit)


def unlearn(config: UnlearnConfig, out: Path, *, overwrite: bool = False, original_scores: dict | None = None) -> dict:
    """Unlearn `config.domain`'s forget set from `config.model`; returns (and writes) results.json."""
    method = methods.get(config.method)
    main = is_main_process()  # trains with the others; alone scores, evaluates utility and writes
    results: dict = {}
    with Run.start(out, "unlearn", config, overwrite=overwrite, seed=config.train.seed) as run:
        available = require_forget_set(config.data, config.domain)
        model, tokenizer = load_configured(config)
        reference = (frozen_reference(model, config.train.reference_model)
                     if uses_reference(method, config.method_args) else None)
        context = MethodContext(reference=reference, special_ids=tokenizer.all_special_ids, vocab_size=len(tokenizer))
        objective = method(context, config.method_args)
        retain = retain_split(config.domain, objective.retain_data) if objective.retain_term else None
        extra_splits = list(dict.fromkeys([*([retain] if retain else []), *objective.extra_splits(config.domain)]))
        for split in extra_splits:
            if split not in available:
                raise LetheError(f"method {config.method!r} needs the {'retain ' if split == retain else ''}split "
                                 f"{split!r}, which {config.data} does not have")
        data = RunData.load(config.data, config.domain, tokenizer, config.chunk, model_context(model),
                            extra_splits=extra_splits)
        if config.forget_documents:
            data = data.forgetting_only(config.forget_documents)
        check_disjoint(data.role_documents("forget"), data.role_documents("approximate"), ("forget", "approximate"),
                       "the approximate set must be unseen data")
        utility_before = utility(model, tokenizer, config, data, run.path / "utility_tasks") if main else None
        run.record_data({name: available[name] for name in data.documents})
        groups = {"forget": data.role_chunks("forget")}
        if retain is not None:
            groups["retain"] = data.chunks[retain]

        if original_scores is None and main:
            original_scores = score_roles(model, tokenizer, data, config.eval.batch_tokens,
                                          run.scores_dir / "original")

        def score_role(current, role: str):  # perplexity only: no attack reads the vocabulary statistics here
            return score_chunks(current, data.role_chunks(role), batch_tokens=config.eval.batch_tokens,
                                pad_id=tokenizer.pad_token_id, progress=False, vocab_stats=False)

        # every process evaluates (the stop must agree across them); only the main one scored the original
        approximate_before = (original_scores["approximate"] if original_scores is not None
                              else score_role(model, "approximate")).perplexity() if config.train.eval_every else None

        def approximate_gap_now(current) -> dict[str, float]:
            forget = score_role(current, "forget")
            gap = {"forget_ppl": forget.perplexity(),
                   "log_ppl_ratio_before": math.log(forget.perplexity() / approximate_before)}
            if config.stop_yardstick == "before":  # the mark is fixed: the approximate set is scored after, not
                return gap                          # at every evaluation (half of each evaluation's forwards)
            approximate = score_role(current, "approximate")
            return {**gap, "approximate_ppl": approximate.perplexity(),
                    "log_ppl_ratio": log_ppl_ratio(forget, approximate)}

        if config.stop_at_approximate and not config.train.eval_every:
            raise LetheError("stop_at_approximate needs evaluations: set train.eval_every")
        stop = StopAtApproximate(config.stop_yardstick, keep_nearer=config.stop_keeps == "nearer")
        pretrain = pretrain_record(config.model, config.pretrain_tokens)
        objective.prepare(model, config, pretrain)
        trainer = Trainer(
            model, objective, groups, config.train, pad_id=tokenizer.pad_token_id,
            checkpoint_dir=run.checkpoints_dir,
            evaluator=approximate_gap_now if config.train.eval_every else None,
            callbacks=[stop] if config.stop_at_approximate else [],
            batch_sizes={"retain": config.train.batch_size * config.method_args.retain_ratio},
            desc=f"unlearn {config.method} ({config.domain})", tokenizer=tokenizer)
        if stop.keep_nearer and config.stop_at_approximate:
            if trainer.shards_weights:
                raise LetheError("stop_keeps: nearer keeps whole weights, which FSDP and DeepSpeed ZeRO-3 shard; set "
                                 "stop_keeps: crossing")
            stop.model = trainer.unwrapped_model()
        try:
            result = trainer.fit()
            trainer, result = objective.after_training(trainer, result, data.chunks, config)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"{config.method} diverged: {exc}; lower train.lr or add a retain term") from None
        model = trainer.save_model(run.path / "model", tokenizer)
        if not main:
            return from_main_process(results)
        blind = split_blind(data.role_chunks("forget"), data.role_chunks("approximate"), tokenizer, config.eval)
        before = with_blind_verdicts(unlearning_metrics(original_scores, config.eval), blind)
        after_scores = score_roles(model, tokenizer, data, config.eval.batch_tokens, run.scores_dir / "unlearned")
        after = with_blind_verdicts(unlearning_metrics(after_scores, config.eval, model.config.vocab_size,
                                                       original_scores), blind)
        if utility_before is not None:
            before["utility"] = utility_before
            after["utility"] = utility(model, tokenizer, config, data, run.path / "utility_tasks")
        results = {
            "method": config.method, "domain": config.domain, "model": config.model,
            "train": {"steps": result.steps, "tokens": result.tokens, "seconds": result.seconds,
                      "stopped": result.stopped, "history": result.history,
                      **({"kept_step": stop.kept_step} if stop.kept_step is not None else {}),
                      **({"phases": objective.phases} if objective.phases else {})},
            "before": before, "after": after,
            "cost": cost(count_parameters(model), result.tokens, result.seconds, pretrain,
                         reference_tokens=objective.reference_tokens * trainer.accelerator.num_processes),
            "path": str(run.path / "model"),
            "unchanged": trainer.weights_unchanged,
            **({"blind": blind} if blind is not None else {}),
        }
        if broken := sorted(role for role, ppl in after["ppl"].items() if not math.isfinite(ppl)):
            # the study and the report read the `diverged` key as a cell whose numbers measure nothing
            results |= {"diverged": True, "diverged_reason": f"the unlearned model's perplexity is not finite on "
                                                             f"{', '.join(broken)}"}
            log.warning("%s diverged: %s; lower train.lr or add a retain term", config.method,
                        results["diverged_reason"])
        run.write_results(results)
    return from_main_process(results)
