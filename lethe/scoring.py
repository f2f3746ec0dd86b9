"""Per-token log-probabilities, computed once per (model, chunk set) and read by every metric and attack.

For each chunk we keep, at every predicted position t ≥ 1: log p(x_t | x_<t), whether x_t was the
top-1 prediction, and the mean and variance of log p(·| x_<t) over the vocabulary (Min-K%++ needs
these, and they cost nothing extra in the same forward pass).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lethe.data.chunking import Chunk
from lethe.data.padding import pad_sequences
from lethe.engine import losses
from lethe.engine.head import fused_head

_ROW_SLICE = 2048  # positions per slice when reducing the model's own logits over the vocabulary, to bound memory


@dataclass
class TokenScores:
    """Per-token scores of a set of chunks, flat over tokens: log p(x_t), vocabulary mean and variance, top-1 hits."""

    ids: list[str]
    offsets: np.ndarray  # chunk i owns positions offsets[i]:offsets[i+1]
    target_ids: np.ndarray
    logprob: np.ndarray
    vocab_mean: np.ndarray
    vocab_var: np.ndarray
    correct: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def sample(self, index: int, field: str = "logprob") -> np.ndarray:
        return getattr(self, field)[self.offsets[index]:self.offsets[index + 1]]

    def subset(self, ids: set[str]) -> TokenScores:
        """The samples whose id is in `ids`, in this set's order."""
        keep = [i for i, sample_id in enumerate(self.ids) if sample_id in ids]
        per_token = {name: np.concatenate([self.sample(i, name) for i in keep])
                     for name in ("target_ids", "logprob", "vocab_mean", "vocab_var", "correct")}
        offsets = np.concatenate([[0], np.cumsum(self.lengths[keep])]).astype(self.offsets.dtype)
        return TokenScores(ids=[self.ids[i] for i in keep], offsets=offsets, **per_token)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sample_nll(self) -> np.ndarray:
        """Mean negative log-likelihood per chunk."""
        sums = np.add.reduceat(-self.logprob.astype(np.float64), self.offsets[:-1])
        return sums / self.lengths

    def perplexity(self) -> float:
        """Token-weighted: exp of the mean NLL over all predicted tokens of the set (inf past float64's range, which
        results flag)."""
        with np.errstate(over="ignore"):
            return float(np.exp(-self.logprob.astype(np.float64).mean()))

    def mean_sample_perplexity(self) -> float:
        return float(np.exp(self.sample_nll()).mean())

    def accuracy(self) -> float:
        return float(self.correct.mean())

    def summary(self) -> dict[str, float | int]:
        return {"ppl": self.perplexity(), "ppl_sample_mean": self.mean_sample_perplexity(),
                "accuracy": self.accuracy(), "chunks": len(self), "tokens": int(self.offsets[-1])}

    def save(self, path: Path) -> None:
        """Arrays in .npz plus a per-sample JSONL a person can read (strict JSON: a NaN or infinite value is null)."""
        from lethe.run_paths import confined

        path = confined(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path.with_suffix(".npz"), ids=np.array(self.ids), offsets=self.offsets,
                            target_ids=self.target_ids, logprob=self.logprob, vocab_mean=self.vocab_mean,
                            vocab_var=self.vocab_var, correct=self.correct)
        nll = self.sample_nll()
        ppl = np.exp(np.minimum(nll, 709.0))  # beyond, float64 overflows: written as null
        ppl[nll > 709.0] = np.inf
        with path.with_suffix(".jsonl").open("w") as handle:
            for i, chunk_id in enumerate(self.ids):
                record = {"id": chunk_id, "tokens": int(self.lengths[i]), "nll": float(nll[i]),
                          "ppl": float(ppl[i])}
                record = {key: None if isinstance(value, float) and not math.isfinite(value) else value
                          for key, value in record.items()}
                handle.write(json.dumps(record, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> TokenScores:
        with np.load(path.with_suffix(".npz")) as arrays:
            return cls(ids=[str(i) for i in arrays["ids"]], offsets=arrays["offsets"],
                       target_ids=arrays["target_ids"], logprob=arrays["logprob"],
                       vocab_mean=arrays["vocab_mean"], vocab_var=arrays["vocab_var"], correct=arrays["correct"])


def length_buckets(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Group indices, longest first, so each batch pads to at most batch_tokens with little waste."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]
        if current and (len(current) + 1) * width > batch_tokens:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def _position_stats(logits: torch.Tensor, targets: torch.Tensor, vocab_stats: bool = True):
    """Per position: log p(target), vocabulary mean and variance of log p (NaN if not wanted), top-1 hit (the target
    is a most likely token: ties count as hits; a comparison with the maximum is several times faster than argmax)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    target_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    top1 = target_logp >= logp.amax(-1)
    if not vocab_stats:
        missing = torch.full_like(target_logp, float("nan"))
        return target_logp, missing, missing, top1
    # one vocabulary-wide product (p·log p) instead of three tensors and a square: 2-3× faster on CPU
    weighted = logp.exp().mul_(logp)
    mean = weighted.sum(-1)
    var = torch.linalg.vecdot(weighted, logp) - mean.square()  # E[log² p] − E[log p]²
    return target_logp, mean, var.clamp_min(0), top1


@torch.no_grad()
def score_chunks(model, chunks: Sequence[Chunk], *, batch_tokens: int = 4096, pad_id: int = 0,
                 desc: str = "scoring", progress: bool = True, bar: tqdm | None = None,
                 vocab_stats: bool = True) -> TokenScores:
    """Scores in length-bucketed batches; `bar` lets several calls share one progress bar.

    vocab_stats=False skips the vocabulary mean and variance (stored as NaN) where no attack reads them.
    Where the model's head is a plain linear map (lethe.engine.head), the forward stops at the head's input and the
    logits are made and reduced one cache-sized block of positions at a time, never for the whole batch.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    per_chunk: list[tuple | None] = [None] * len(chunks)
    batches = length_buckets([len(c) for c in chunks], batch_tokens)
    own_bar = bar is None
    if own_bar:
        bar = tqdm(total=len(batches), desc=desc, unit="batch", disable=not progress, leave=False)
    fused, _ = fused_head(model, model)
    rows = losses.head_block_rows(fused.head.out_features) if fused else _ROW_SLICE
    for batch in batches:
        ids, mask = pad_sequences([chunks[index].input_ids for index in batch], pad_id)
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        # with a fused head, the head's input: each block's logits are made just before they are reduced
        outputs = fused.hidden_states(**inputs) if fused else model(**inputs).logits
        for row, index in enumerate(batch):
            n = len(chunks[index]) - 1
            targets = ids[row, 1:n + 1].to(device)
            pieces = []
            for start in range(0, n, rows):
                block = outputs[row, start:min(start + rows, n)]
                logits = fused.head(block) if fused else block
                pieces.append(_position_stats(logits, targets[start:start + rows], vocab_stats))
            per_chunk[index] = (targets.cpu().numpy(),
                                *(torch.cat(parts).cpu().numpy() for parts in zip(*pieces, strict=True)))
        bar.update(1)
    if own_bar:
        bar.close()
    model.train(was_training)
    lengths = [len(c) - 1 for c in chunks]
    columns = list(zip(*per_chunk, strict=True)) if chunks else [[]] * 5
    concat = [np.concatenate(col) if chunks else np.zeros(0) for col in columns]
    return TokenScores(ids=[c.id for c in chunks], offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                       target_ids=concat[0].astype(np.int32), logprob=concat[1].astype(np.float32),
                       vocab_mean=concat[2].astype(np.float32), vocab_var=concat[3].astype(np.float32),
                       correct=concat[4].astype(bool))


def sample_gradient_norms(model, chunks: Sequence[Chunk], *, p: float = 2.0, desc: str = "gradient norms",
                          progress: bool = True) -> np.ndarray:
    """Per chunk: the mean over parameter tensors of ‖∇θ NLL(chunk)‖_p (one backward per chunk).

    One chunk at a time because per-sample gradients of a whole batch would need batch × parameters memory.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    params = list(model.parameters())
    flags = [param.requires_grad for param in params]
    for param in params:
        param.requires_grad_(True)
    norms = np.empty(len(chunks))
    try:
        for i, chunk in enumerate(tqdm(chunks, desc=desc, unit="sample", disable=not progress, leave=False)):
            ids = torch.tensor([chunk.input_ids], device=device)
            loss = model(input_ids=ids, labels=ids).loss
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            norms[i] = torch.stack([torch.linalg.vector_norm(g, ord=p) for g in grads if g is not None]).mean().item()
    finally:
        for param, flag in zip(params, flags, strict=True):
            param.requires_grad_(flag)
        model.train(was_training)
    return norms
