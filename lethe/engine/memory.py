"""How much device memory a training run needs, estimated before it starts, and a refusal before an out-of-memory one.

The estimate of one optimiser step's peak, in bytes, on one device (docs/gpus.md has the table per method):

    weights      P · w                    P parameters, w bytes per weight (4 for float32, 2 for bfloat16)
    gradients    Pt · w                   Pt trainable parameters (all, or LoRA's adapters)
    optimizer    2 · Pt · w               AdamW's two moments, in the weights' dtype
    reference    P · r                    the frozen original model, where the method reads one and it is kept on
                                          this device (r: its bytes per weight; 0 when offloaded to the CPU)
    activations  Σ_groups t · (L·a + 4V + 12h)   what backward keeps of every group's forward (forget, retain):
                                          t = sequences · sequence length tokens; per block and token
                                          a = 4·(8h + 2·kv + 4·I + heads + 6) bytes, or a = 4·h with gradient
                                          checkpointing (only each block's input); 4V: the float32 logits
                                          the cross-entropy keeps, or 4h with a fused head (the gradient of the
                                          hidden states, formed in the forward); 12h: the final norm
    transient    t_max · V · (8 + c)       the largest group's head backward (two float32 vocabulary-wide tensors, plus
                                          the c-byte logits under autocast; with a fused head, one block of rows and
                                          the head's float32 weight gradient: 4·V·h + 8·min(t_max, 2^20/V)·V), or
                                          with checkpointing one block's recomputed activations, or the reference's
                                          forward, whichever is largest

with h the hidden size, kv the key/value width (h · kv_heads / heads), I the MLP width, L the blocks and V the
vocabulary. The per-block count is what PyTorch's autograd saves for a Hugging Face Llama block with fused
attention (no T² attention scores), measured with saved-tensor hooks; tests/test_memory.py checks it (within 0.5%)
and the exact weight and optimizer bytes against torch's own memory tracker on the micro model. Activations are
counted at float32 size under bf16 autocast too (the residual stream and the norms stay float32 there; on CPU
autocast the saved tensors measured 71-96% of that), so for mixed precision the estimate errs high. Weights,
gradients, optimizer and activations are summed although gradients grow only as activations are freed: an upper
bound of the peak, not counting the CUDA context, the allocator's fragmentation or eager attention's T² scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import torch

from lethe.engine.losses import ROW_BLOCK_FLOATS
from lethe.errors import LetheError

log = logging.getLogger("lethe")
GIB = 1024 ** 3


@dataclass(frozen=True)
class ModelShape:
    parameters: int
    trainable: int
    weight_bytes: int  # per parameter
    hidden: int
    layers: int
    intermediate: int
    kv_hidden: int
    heads: int
    vocab: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelShape:
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        params = list(model.parameters())
        return cls(parameters=sum(p.numel() for p in params),
                   trainable=sum(p.numel() for p in params if p.requires_grad),
                   weight_bytes=params[0].element_size(), hidden=config.hidden_size,
                   layers=config.num_hidden_layers,
                   intermediate=getattr(config, "intermediate_size", None) or 4 * config.hidden_size,
                   kv_hidden=config.hidden_size * kv_heads // heads, heads=heads, vocab=config.vocab_size)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    reference: int
    activations: int
    transient: int

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def summary(self) -> str:
        parts = ", ".join(f"{f.name} {getattr(self, f.name) / GIB:.2f}" for f in fields(self))
        return f"{self.total / GIB:.2f} GiB ({parts})"


def block_bytes_per_token(shape: ModelShape, checkpointing: bool) -> int:
    """What autograd keeps of one transformer block per token (float32 elements)."""
    if checkpointing:
        return 4 * shape.hidden
    return 4 * (8 * shape.hidden + 2 * shape.kv_hidden + 4 * shape.intermediate + shape.heads + 6)


def estimate_memory(shape: ModelShape, groups: list[tuple[int, int]], *, checkpointing: bool = False,
                    autocast_bytes: int = 4, reference_bytes: int = 0, reference_tokens: int = 0,
                    shards: int = 1, fused_head: bool = False) -> MemoryEstimate:
    """Peak bytes of a training step on one device.

    groups: (sequences, sequence length) of every forward whose graph is alive at the backward (forget, retain);
    autocast_bytes: 2 under bf16/fp16 autocast; reference_bytes: the reference model's bytes on this device;
    reference_tokens: the most tokens it scores at once; shards: processes FSDP / ZeRO-3 split weights over;
    fused_head: every loss of the step is a mean cross-entropy through the fused head (lethe.engine.losses).
    """
    tokens = [sequences * length for sequences, length in groups]
    head_saved = 4 * shape.hidden if fused_head else 4 * shape.vocab
    saved = block_bytes_per_token(shape, checkpointing) * shape.layers + head_saved + 12 * shape.hidden
    logits_copy = autocast_bytes if autocast_bytes != 4 else 0  # float32 logits are their own float32 copy
    recomputed = max(tokens) * block_bytes_per_token(shape, False) if checkpointing else 0
    if fused_head:
        rows = min(max(tokens), max(1, ROW_BLOCK_FLOATS // shape.vocab))
        head = 4 * shape.vocab * shape.hidden + (8 + logits_copy) * rows * shape.vocab
    else:
        head = (8 + logits_copy) * shape.vocab * max(tokens)
    transient = max(head, recomputed)
    reference_pass = reference_tokens * shape.vocab * (4 + 4 + logits_copy) if reference_bytes else 0
    trainable = shape.trainable * shape.weight_bytes // shards
    return MemoryEstimate(weights=shape.parameters * shape.weight_bytes // shards, gradients=trainable,
                          optimizer=2 * trainable, reference=reference_bytes, activations=sum(tokens) * saved,
                          transient=max(transient, reference_pass))


def device_memory(device: torch.device) -> tuple[int, int] | None:
    """(free bytes, bytes this process already holds) of a CUDA device; None elsewhere."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free, torch.cuda.memory_allocated(device)


def check_fits(estimate: MemoryEstimate, device: torch.device, *, refuse: bool = True) -> None:
    """Logs the estimate on a GPU and refuses a run it says cannot fit: better now than out of memory at step 1."""
    memory = device_memory(device)
    if memory is None:
        log.debug("memory estimate (%s): %s", device, estimate.summary())
        return
    free, held = memory
    needed = estimate.total - held  # the weights already loaded are part of the estimate
    log.info("memory estimate on %s: %s; %.2f GiB free", device, estimate.summary(), free / GIB)
    if needed > free and refuse:
        raise LetheError(f"this run needs about {estimate.total / GIB:.1f} GiB on {device} but only "
                         f"{(free + held) / GIB:.1f} GiB is free ({estimate.summary()}); set "
                         "train.gradient_checkpointing=true, train.reference_model=bf16 or cpu, a smaller "
                         "train.batch_size, LoRA or FSDP (docs/gpus.md), or train.memory_check=false to try anyway")


def check_training_memory(model: torch.nn.Module, objective, streams: dict, config, device: torch.device,
                          shards: int = 1, fused_head: bool = False) -> MemoryEstimate | None:
    """The estimate for the Trainer's run: its model, its objective's batch groups at their longest chunks, and the
    frozen reference the objective holds (unlearning methods' `context.reference`), counted where it sits;
    fused_head: the trainer will fuse the head (then it serves the objective unless a term reads the logits).
    None for a model whose config does not name a transformer's sizes (nothing to estimate from)."""
    try:
        shape = ModelShape.of(model)
    except AttributeError as missing:
        log.debug("no memory estimate: %s", missing)
        return None
    reference = getattr(getattr(objective, "context", None), "reference", None)
    reference_bytes = sum(p.numel() * p.element_size() for p in reference.parameters()
                          if p.device == device) if reference is not None else 0
    groups = [(stream.batch_size, max(len(chunk) for chunk in stream.chunks)) for stream in streams.values()]
    estimate = estimate_memory(shape, groups, checkpointing=config.gradient_checkpointing,
                               autocast_bytes=2 if config.mixed_precision != "no" else 4,
                               reference_bytes=reference_bytes,
                               reference_tokens=max(s * n for s, n in groups) if reference is not None else 0,
                               shards=shards, fused_head=fused_head and not getattr(objective, "reads_logits", True))
    check_fits(estimate, device, refuse=config.memory_check)
    return estimate
