"""The training loop, on Hugging Face Accelerate so one code path runs on a CPU, a GPU or many.

Batches are dealt by arithmetic on the global micro-step (a seeded permutation per epoch, sharded
by process rank), so a run resumed from a checkpoint sees exactly the batches an uninterrupted run
would have seen, and ends with the same weights.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lethe.config import DPConfig, TrainConfig
from lethe.data.chunking import Chunk
from lethe.data.padding import pad_sequences
from lethe.engine.big_models import enable_gradient_checkpointing, refuse_ignored_sharding
from lethe.engine.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint, weights_digest
from lethe.engine.guard import Guard
from lethe.engine.head import fused_head, plain_head
from lethe.engine.memory import check_training_memory
from lethe.engine.objectives import Batch, Objective
from lethe.engine.schedule import refuse_no_updates, schedule
from lethe.engine.trackers import Tracking, accelerator_options
from lethe.errors import LetheError, TrainingDiverged
from lethe.models import save_model
from lethe.processes import from_main_process, on_cpu_only

log = logging.getLogger("lethe")


class Callback:
    """Hook into evaluations; return True from on_evaluate to stop training."""

    def on_evaluate(self, step: int, metrics: dict[str, float]) -> bool:
        return False


@dataclass
class EarlyStopping(Callback):
    metric: str
    patience: int
    mode: str = "min"
    best: float | None = None
    waited: int = 0

    def on_evaluate(self, step, metrics):
        if self.metric not in metrics:
            raise LetheError(f"early stopping watches {self.metric!r}, which the evaluation does not report "
                             f"(it reports: {', '.join(metrics)})")
        value = metrics[self.metric]
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        self.best, self.waited = (value, 0) if better else (self.best, self.waited + 1)
        return self.waited >= self.patience


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    stopped: str
    history: list[dict] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class GroupStream:
    """One batch group's micro-batches for this process, addressable by global micro-step."""

    def __init__(self, name: str, chunks: Sequence[Chunk], batch_size: int, seed: int, rank: int, world: int,
                 pad_id: int) -> None:
        if not chunks:
            raise LetheError(f"batch group {name!r} is empty")
        self.name, self.chunks, self.batch_size = name, chunks, batch_size
        self.seed, self.rank, self.world, self.pad_id = seed, rank, world, pad_id
        per_process = math.ceil(len(chunks) / world)
        self.batches_per_epoch = math.ceil(per_process / batch_size)

    def _shard(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.chunks), generator=generator).tolist()
        order += order[: (-len(order)) % self.world]  # equal shards: every process steps together
        return order[self.rank::self.world]

    def batches(self, start: int) -> Iterator[Batch]:
        epoch, index = divmod(start, self.batches_per_epoch)
        while True:
            shard = self._shard(epoch)
            for b in range(index, self.batches_per_epoch):
                examples = shard[b * self.batch_size:(b + 1) * self.batch_size]
                # `example`: each row's position in the group, which objectives key per-example caches on
                yield collate([self.chunks[i] for i in examples], self.pad_id) | {"example": torch.tensor(examples)}
            epoch, index = epoch + 1, 0


def collate(chunks: Sequence[Chunk], pad_id: int) -> Batch:
    """A training batch: right-padded ids, and labels that ignore the padding."""
    ids, mask = pad_sequences([chunk.input_ids for chunk in chunks], pad_id)
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def _apply_lora(model, config: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = config.lora
    return get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                            target_modules=lora.target_modules, task_type="CAUSAL_LM"))


MAX_STEPS = 10**8  # more optimiser steps than any run of this engine would finish


class Trainer:
    """Runs an objective over named chunk groups with AdamW, warm-up + schedule, clipping, checkpoints."""

    def __init__(self, model, objective: Objective, data: dict[str, Sequence[Chunk]], config: TrainConfig, *,
                 pad_id: int, checkpoint_dir: Path | None = None,
                 evaluator: Callable[[torch.nn.Module], dict[str, float]] | None = None,
                 callbacks: Sequence[Callback] = (), batch_sizes: dict[str, int] | None = None,
                 desc: str = "training", dp: DPConfig | None = None, tokenizer=None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        missing = [g for g in objective.groups if g not in data]
        if missing:
            raise LetheError(f"objective needs batch group {missing[0]!r}, which was not given")
        self.config, self.objective, self.desc = config, objective, desc
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=on_cpu_only(),
                                       **accelerator_options(config))
        if self.accelerator.device.type == "cpu" and config.mixed_precision != "no":
            raise LetheError(f"mixed precision {config.mixed_precision} on CPU is hundreds of times slower; "
                             "set train.mixed_precision=no")
        if config.lora is not None and self.shards_weights:
            raise LetheError("LoRA under FSDP or DeepSpeed ZeRO-3 is not supported (its merge needs whole weights); "
                             "launch with configs/accelerate/ddp.yaml")
        refuse_ignored_sharding(self.accelerator)
        set_seed(config.seed)
        self._initial_weights = weights_digest(model)
        self.weights_unchanged: bool | None = None  # known once the trained model is saved
        if config.lora is not None:
            model = _apply_lora(model, config)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        sizes = {name: config.batch_size for name in objective.groups} | (batch_sizes or {})
        self.streams = {name: GroupStream(name, data[name], sizes[name], config.seed + i, rank, world, pad_id)
                        for i, name in enumerate(objective.groups)}
        primary = self.streams[objective.groups[0]]
        self.micro_per_epoch = primary.batches_per_epoch
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / config.grad_accum)
        self.total_steps = math.ceil(config.epochs * self.steps_per_epoch)
        if self.total_steps > MAX_STEPS and (config.max_steps is None or config.max_steps > MAX_STEPS):
            raise LetheError(f"train.epochs {config.epochs:g} makes {self.total_steps:.3g} optimiser steps, more than "
                             f"any run finishes ({MAX_STEPS:.0e}); lower train.epochs or set train.max_steps")
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        # the fused head serves every mean cross-entropy, except where weights are compiled, per-sample (Opacus) or
        # sharded (FSDP/ZeRO-3 gather them only inside the model's forward), or the head is not a plain linear map
        fusing = config.fused_head and not config.compile and dp is None and not self.shards_weights
        check_training_memory(model, objective, self.streams, config, self.accelerator.device,
                              shards=world if self.shards_weights else 1,
                              fused_head=fusing and not isinstance(plain_head(model), str))
        trainable = [p for p in model.parameters() if p.requires_grad]
        # the fused kernel updates all parameters in one pass (CPU and CUDA); the default loops per tensor
        fused = self.accelerator.device.type in ("cpu", "cuda") and all(p.dtype.is_floating_point for p in trainable)
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
        self.privacy = None
        if dp is not None:
            if world > 1 or len(objective.groups) > 1:
                raise LetheError("DP-SGD is accounted for one batch group in one process; run it without "
                                 "`accelerate launch` and with a single-group objective")
            from lethe.engine.dp_sgd import make_private

            model, optimizer, self.privacy = make_private(
                model, optimizer, dp, samples=len(primary.chunks), batch_size=primary.batch_size,
                grad_accum=config.grad_accum, steps=self.total_steps)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        # only the training forward is compiled: saving, checkpoints and evaluations keep the plain module
        self.training_model = self.model
        if config.compile:
            if self.privacy is not None:
                raise LetheError("train.compile does not apply to DP-SGD (Opacus's per-sample hooks); turn one off")
            self.training_model = torch.compile(self.model)
        elif fusing:  # checked on the model's own device, after `prepare` moved it there
            fused, why = fused_head(self.model, self.unwrapped_model())
            log.debug("fused head: %s", why)
            self.training_model = fused or self.model
        self.scheduler = self._scheduler()  # saved in checkpoints as JSON (engine/checkpoints.py), never pickled
        self.checkpoint_dir, self.evaluator, self.callbacks = checkpoint_dir, evaluator, list(callbacks)
        self.tokenizer = tokenizer  # saved with the last good weights, so they load like any model
        if config.early_stop is not None:
            if evaluator is None or not config.eval_every:
                raise LetheError("train.early_stop needs evaluations: set train.eval_every")
            stop = config.early_stop
            self.callbacks.append(EarlyStopping(stop.metric, stop.patience, stop.mode))
        self.step = 0
        self.micro_step = 0
        self.tokens = 0
        self.history: list[dict] = []
        self._seconds_before = 0.0  # training time of the run before it was resumed
        self.guard = Guard(config.guard, self._on_any_process)

    def _scheduler(self):
        refuse_no_updates(self.config, self.total_steps)
        return schedule(self.config, self.optimizer, self.total_steps)

    # -- checkpoints -------------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        if self.checkpoint_dir is None:
            return
        # what results need of the steps before a resume: tokens, time, history
        save_checkpoint(self, self.checkpoint_dir / f"step-{self.step:06d}",
                        {"step": self.step, "micro_step": self.micro_step, "tokens": self.tokens,
                         "seconds": self._seconds_before + time.time() - self._started, "history": self.history})

    def _resume(self) -> None:
        latest = latest_checkpoint(self.checkpoint_dir)
        state = load_checkpoint(self, latest)
        self.step, self.micro_step = state["step"], state["micro_step"]
        self.tokens, self._seconds_before = state.get("tokens", 0), state.get("seconds", 0.0)
        self.history = state.get("history", [])
        log.info("resumed from %s (step %d of %d)", latest, self.step, self.total_steps)

    def _trainable(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _keep_last_good(self, reason: str) -> None:
        """Stop loudly with the model holding the last weights whose loss and gradient were sane (with the guard
        off: those before the failing update), saved too when there is a checkpoint directory."""
        good_step = self.guard.restore(self._trainable(), self.step)
        where = "in memory"
        if self.checkpoint_dir is not None:
            target = self.checkpoint_dir / "last-good"
            self.save_model(target, self.tokenizer, final=False)
            where = f"in {target}"
        raise TrainingDiverged(f"{reason} at step {self.step + 1}; training stopped, last good weights (after step "
                               f"{good_step}) kept {where}")

    def _on_any_process(self, flag: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return flag
        value = torch.tensor(1.0 if flag else 0.0, device=self.accelerator.device)
        return self.accelerator.reduce(value, "max").item() == 1.0

    # -- loop --------------------------------------------------------------------------------------
    def _micro_batches(self) -> Iterator[dict[str, Batch]]:
        iterators = {name: stream.batches(self.micro_step) for name, stream in self.streams.items()}
        while True:
            yield {name: {k: v.to(self.accelerator.device) for k, v in next(it).items()}
                   for name, it in iterators.items()}

    def fit(self, resume: bool = False) -> TrainResult:
        if resume:
            self._resume()
        self.model.train()
        self._started = time.time()
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.desc, unit="step",
                   disable=not self.accelerator.is_local_main_process, dynamic_ncols=True)
        self.tracking = Tracking(self.accelerator, self.config, self.desc)
        try:
            stopped = self._loop(bar)
        finally:
            bar.close()  # also when training stops with an error, which is then the last line shown
            self.tracking.finish()
        if self.privacy is not None:
            self.privacy.cleanup()
        if stopped == "completed" and self.config.max_steps is not None and self.step == self.config.max_steps:
            stopped = "max_steps"
        return TrainResult(steps=self.step, tokens=self.tokens, stopped=stopped, history=self.history,
                           seconds=self._seconds_before + time.time() - self._started)

    def _loop(self, bar) -> str:
        accel, config, history = self.accelerator, self.config, self.history
        stopped = "completed"
        batches = self._micro_batches()
        window_logs: list[dict[str, float]] = []
        while self.step < self.total_steps:
            in_epoch = self.micro_step % self.micro_per_epoch
            window_start = in_epoch - in_epoch % config.grad_accum
            window = min(config.grad_accum, self.micro_per_epoch - window_start)
            boundary = in_epoch == window_start + window - 1
            groups = next(batches)
            with accel.autocast(), (accel.no_sync(self.model) if not boundary else nullcontext()):
                loss, logs = self.objective(self.training_model, groups)
                if problem := self.guard.loss_problem(loss.item()):
                    self._keep_last_good(problem)
                # Opacus averages the per-sample gradients of accumulated micro-batches itself
                accel.backward(loss if self.privacy is not None else loss / window)
            self.tokens += int(sum(int(g["attention_mask"].sum()) for g in groups.values())) * accel.num_processes
            window_logs.append(logs)
            self.micro_step += 1
            if not boundary:
                continue
            norm = self._clip()
            if problem := self.guard.gradient_problem(float(norm)):
                self.optimizer.zero_grad(set_to_none=True)
                self._keep_last_good(problem)
            self.guard.remember(self._trainable(), self.step)
            lr = self.scheduler.get_last_lr()[0]  # the rate this update uses
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            record = {key: sum(d[key] for d in window_logs) / len(window_logs) for key in window_logs[0]}
            record.update(step=self.step, lr=lr, grad_norm=float(norm))
            window_logs = []
            if self.step % config.log_every == 0 or self.step == self.total_steps:
                history.append(record)
                self.tracking.log(record)
                log.debug("step %d: %s", self.step, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step"))
            metrics = self._evaluate(history)
            if config.checkpoint_every and self.step % config.checkpoint_every == 0:  # after the step's evaluation,
                self._save_checkpoint()  # which its history then holds
            bar.update(1)
            shown = {**record, **(metrics or {})}
            bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if k not in ("step", "lr")})
            if metrics is not None and any(callback.on_evaluate(self.step, metrics) for callback in self.callbacks):
                stopped = "early_stop"
                break
        return stopped

    def _clip(self) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.config.max_grad_norm is not None and self.privacy is None:  # DP clips each sample instead
            return self.accelerator.clip_grad_norm_(params, self.config.max_grad_norm)
        grads = [p.grad.detach().norm() for p in params if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack(grads)) if grads else torch.tensor(0.0)

    def _evaluate(self, history: list[dict]) -> dict[str, float] | None:
        every = self.config.eval_every
        if self.evaluator is None or not every or (self.step % every and self.step != self.total_steps):
            return None
        # every process evaluates (a sharded model's forward needs them all); the main one's numbers decide
        metrics = from_main_process(self.evaluator(self.accelerator.unwrap_model(self.model)))
        self.model.train()
        history.append({"step": self.step, **{f"eval/{k}": v for k, v in metrics.items()}})
        self.tracking.log(history[-1])
        log.debug("eval at step %d: %s", self.step, metrics)
        return metrics

    def unwrapped_model(self):
        return self.accelerator.unwrap_model(self.model)

    @property
    def shards_weights(self) -> bool:
        """FSDP and ZeRO-3 leave each process only a shard of every weight."""
        from accelerate.utils import DistributedType

        accel = self.accelerator
        if accel.distributed_type == DistributedType.DEEPSPEED:
            return accel.state.deepspeed_plugin.zero_stage == 3
        return accel.distributed_type == DistributedType.FSDP

    def save_model(self, target: Path, tokenizer=None, *, final: bool = True):
        """Whole weights under any sharding: every process joins Accelerate's gather, the main one writes.

        Returns the whole trained model on the main process (read back from `target` when training
        sharded it) and None on the others. The `final` model is checked against the one training started from.
        """
        accel = self.accelerator
        state = accel.get_state_dict(self.model)  # a collective under FSDP / ZeRO-3: all processes call it
        model = None
        if accel.is_main_process:
            model = self.unwrapped_model()
            # LoRA merges into the model's own weights (whole: LoRA under sharding is refused above)
            save_model(model, tokenizer, target, state_dict=None if hasattr(model, "merge_and_unload") else state)
            if self.shards_weights:
                from transformers import AutoModelForCausalLM

                model = AutoModelForCausalLM.from_pretrained(target, dtype="auto", use_safetensors=True,
                                                             trust_remote_code=False)
                model = model.to(accel.device).eval()
            self.weights_unchanged = final and weights_digest(model) == self._initial_weights
            if self.weights_unchanged:
                log.warning("training left every weight bit-identical to the model it started from (a learning rate "
                            "too small to move a float32 weight, or an objective without gradient): the saved model is "
                            "the original")
        accel.wait_for_everyone()
        return model
