"""Token losses: the cross-entropy of logits, and of a linear head applied block by block to hidden states.

A causal LM's logits are (tokens × vocabulary): for one 4,096-token chunk of a 128k-vocabulary model, 2 GB in
float32, and their gradient as much again. A mean cross-entropy needs neither. Its gradient is known in the forward
up to the one scalar the backward brings (the loss's weight in the objective), so for each block of rows the head's
logits are computed, turned into the loss and into the gradients of the hidden states and of the head's weight, and
dropped while still in cache. Losses whose per-token weights only the backward knows (NPO's per-sequence weights, a
KL term) read `Prediction.logits`, which applies the head to the same hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

Batch = dict[str, torch.Tensor]


def next_token_targets(targets: torch.Tensor) -> torch.Tensor:
    """(B, T-1) targets for positions 0..T-2 → (B, T) aligned with the logits, -100 at the last position.

    Shifting the targets rather than slicing the logits avoids copying the largest tensor of the step.
    """
    return F.pad(targets, (0, 1), value=-100)


ROW_BLOCK_FLOATS = 1 << 20  # fp32 values per block of rows: 4 MiB, which stays in cache while it is worked on
# ...but never fewer rows than this where a block's logits come from a matmul with the head: each block reads the
# whole head weight, and a cache-sized block of a large vocabulary is a skinny matmul that re-reads it many times
# (SmolLM2's 49,152 tokens: 21 rows; its head's loss and gradients took 2.8 s per 512 tokens, 1.0 s at 128 rows;
# bench/head_blocks.py). Vocabularies up to 8,192 (micro, tiny) keep their cache-sized blocks.
MIN_HEAD_BLOCK_ROWS = 128


def head_block_rows(vocab: int) -> int:
    """Rows per block where each block's logits are a matmul with a (vocab × hidden) head."""
    return max(MIN_HEAD_BLOCK_ROWS, ROW_BLOCK_FLOATS // vocab)


class TokenCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy of (N, V) logits against (N,) targets (-100: ignored, loss 0), in float32.

    F.cross_entropy keeps a full (N, V) log-softmax for its backward and, for bf16 logits, a float32 copy of
    them; its backward then writes two more (N, V) tensors. Here only the logits themselves are kept, each
    block of rows is upcast only while it is worked on (and stays in cache), and the backward writes the
    gradient once: softmax − one-hot, recomputed block by block. Measured on CPU (2,048 × 8,192): about
    half the time of F.cross_entropy's forward and backward, with the same per-token losses.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rows = max(1, ROW_BLOCK_FLOATS // logits.shape[1])
        ignored = targets == -100
        picked = targets.masked_fill(ignored, 0)
        # per block, the fused log-softmax (twice as fast as logsumexp on CPU; per-token values F.cross_entropy's)
        loss = -torch.cat([torch.log_softmax(block, -1, dtype=torch.float32).gather(1, chosen[:, None]).squeeze(1)
                           for block, chosen in zip(logits.split(rows), picked.split(rows), strict=True)])
        ctx.save_for_backward(logits, picked, ignored)
        return loss.masked_fill(ignored, 0.0)

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        logits, picked, ignored = ctx.saved_tensors
        rows = max(1, ROW_BLOCK_FLOATS // logits.shape[1])
        scale = grad_loss.masked_fill(ignored, 0.0)[:, None]
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], rows):
            block = slice(start, start + rows)
            probs = torch.softmax(logits[block], -1, dtype=torch.float32)
            probs.scatter_add_(1, picked[block, None], probs.new_full((probs.shape[0], 1), -1.0))
            grad[block] = probs.mul_(scale[block])
        return grad, None


def mean_nll(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of (B, T, V) logits against (B, T) aligned targets, ignoring -100 (float32 for bf16 logits)."""
    loss = TokenCrossEntropy.apply(logits.flatten(0, 1), targets.flatten())
    if reduction == "none":
        return loss.view(targets.shape)
    return loss.sum() / (targets != -100).sum()


class LinearCrossEntropySum(torch.autograd.Function):
    """Σ over non-ignored rows of −log softmax(h W^T + b)[target], with every gradient formed in the forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets):
        rows = head_block_rows(weight.shape[0])
        kept = targets != -100
        picked = targets.masked_fill(~kept, 0)
        want_hidden, want_weight, want_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros_like(hidden) if want_hidden else None
        # float32 sums across blocks even for a low-precision head
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if want_bias else None
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], rows):
            block, row_kept = slice(start, start + rows), kept[start:start + rows]
            if not row_kept.any():
                continue
            rows_hidden, rows_picked = hidden[block], picked[block, None]
            logp = torch.log_softmax(F.linear(rows_hidden, weight, bias), -1, dtype=torch.float32)
            total -= logp.gather(1, rows_picked).squeeze(1).masked_fill(~row_kept, 0.0).sum()
            # d(−log p_target)/d logits = softmax − one-hot; ignored rows contribute nothing
            grad_logits = logp.exp_()
            grad_logits.scatter_add_(1, rows_picked, grad_logits.new_full(rows_picked.shape, -1.0))
            grad_logits.mul_(row_kept[:, None])
            if want_hidden:
                grad_hidden[block] = grad_logits.to(weight.dtype) @ weight
            if want_weight:
                grad_weight += (grad_logits.to(rows_hidden.dtype).T @ rows_hidden).float()
            if want_bias:
                grad_bias += grad_logits.sum(0)
        ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight, grad_bias) if g is not None))
        ctx.dtypes = weight.dtype, None if bias is None else bias.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        saved = iter(ctx.saved_tensors)
        want_hidden, want_weight, want_bias = ctx.needs_input_grad[:3]
        weight_dtype, bias_dtype = ctx.dtypes
        grad_hidden = next(saved) * grad_total if want_hidden else None  # a 0-d float32 factor keeps the dtype
        grad_weight = (next(saved) * grad_total).to(weight_dtype) if want_weight else None
        grad_bias = (next(saved) * grad_total).to(bias_dtype) if want_bias else None
        return grad_hidden, grad_weight, grad_bias, None


@dataclass
class Prediction:
    """A model's output on a batch, as the losses read it: either its logits, or its final hidden states and head."""

    hidden: torch.Tensor | None = None  # (B, T, d) the head's input
    head: torch.nn.Linear | None = None
    computed_logits: torch.Tensor | None = None

    @property
    def logits(self) -> torch.Tensor:
        """(B, T, V), computed from the hidden states the first time they are asked for."""
        if self.computed_logits is None:
            self.computed_logits = self.head(self.hidden)
        return self.computed_logits

    def mean_nll(self, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy against (B, T) aligned targets, ignoring -100 (as `mean_nll`)."""
        if self.computed_logits is not None:
            return mean_nll(self.computed_logits, targets)
        flat = targets.flatten()
        total = LinearCrossEntropySum.apply(self.hidden.flatten(0, 1), self.head.weight, self.head.bias, flat)
        return total / (flat != -100).sum()
