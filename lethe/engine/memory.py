"""How much device memory a training run needs, estimated before it starts, and a refusal before an out-of-memory one.

The estimate of one optimiser step's peak, in bytes, on one device (docs/gpus.md has the table per method):

    weights      P · w                    P parameters, w bytes per weight (4 for float32, 2 for bfloat16)
    gradients    Pt · w                   Pt trainable parameters (all, or LoRA's adapters)
    optimizer    2 · Pt · w               AdamW's two moments, in the weights' dtype
    reference    P · r                    the frozen original model, where the method reads one and it is kept on
                                          this device (r: its bytes per weight; 0 when offloaded to the CPU)
    activations  Σ_groups t · (L·a + 4V + 12h)   what backward keeps of every group's forward (forget, retain):
                                          t = sequences · sequence length tokens; per block and token
                                          a = 4·(8h + 2·kv + 4·I + heads + 6) bytes for a gated MLP (Llama, Qwen2,
                                          Mistral, ...; GPT-2 and GPT-NeoX: `BLOCK_ELEMENTS`), plus 3·heads·T
                                          when attention dropout is on (it takes attention off the fused kernel's
                                          path, which then keeps T² scores), or a = 4·h with gradient
                                          checkpointing (only each block's input); 4V: the float32 logits
                                          the cross-entropy keeps, or 4h with a fused head (the gradient of the
                                          hidden states, formed in the forward); 12h: the final norm
    transient    t_max · V · (8 + c)       the largest group's head backward (two float32 vocabulary-wide tensors, plus
                                          the c-byte logits under autocast; with a fused head, one block of rows and
                                          the head's float32 weight gradient: 4·V·h + 8·min(t_max, 2^20/V)·V), or
                                          with checkpointing one block's recomputed activations, or the reference's
                                          forward, whichever is largest

with h the hidden size, kv the key/value width (h · kv_heads / heads), I the MLP width, L the blocks and V the
vocabulary. The per-block count is what PyTorch's autograd saves for a Hugging Face block with fused attention,
measured with saved-tensor hooks; tests/test_memory.py checks it for Llama, Qwen2, GPT-2 and GPT-NeoX (within 1%,
with and without dropout) and the exact weight and optimizer bytes against torch's own memory tracker on the micro
model. Activations are
counted at float32 size under bf16 autocast too (the residual stream and the norms stay float32 there; on CPU
autocast the saved tensors measured 71-96% of that), so for mixed precision the estimate errs high. Weights,
gradients, optimizer and activations are summed although gradients grow only as activations are freed: an upper
bound of the peak, not counting the CUDA context, the allocator's fragmentation or eager attention's T² scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch

from lethe.engine.losses import head_block_rows
from lethe.errors import LetheError

log = logging.getLogger("lethe")
GIB = 1024 ** 3



class BlockElements(NamedTuple):
    """float32 elements autograd keeps per block and token, per unit of each size; `dropout_hidden`: what attention
    dropout adds per unit of h besides its 3·heads·T scores."""
    hidden: int
    kv: int
    intermediate: int
    head: int
    constant: int
    dropout_hidden: int


# GPT-2's MLP keeps five I-wide tensors (its tanh GELU is composed of elementwise ops, each saving its input);
# GPT-NeoX's fused QKV keeps no separate K/V and its exact GELU two I-wide tensors. Others: the gated Llama block.
GATED_BLOCK = BlockElements(8, 2, 4, 1, 6, 1)
BLOCK_ELEMENTS = {"gpt2": BlockElements(8, 2, 5, 1, 4, 0), "gpt_neox": BlockElements(8, 0, 2, 1, 4, 1)}


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
    family: str = "llama"  # config.model_type
    attention_dropout: float = 0.0

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
                   intermediate=(getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
                                 or 4 * config.hidden_size),
                   kv_hidden=config.hidden_size * kv_heads // heads, heads=heads, vocab=config.vocab_size,
                   family=getattr(config, "model_type", "llama"),
                   attention_dropout=float(next((getattr(config, key) for key in ("attention_dropout", "attn_pdrop")
                                                 if isinstance(getattr(config, key, None), (int, float))), 0.0)))


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


def block_bytes_per_token(shape: ModelShape, checkpointing: bool, length: int = 0) -> int:
    """Bytes autograd keeps of one transformer block per token of sequences `length` tokens long."""
    if checkpointing:
        return 4 * shape.hidden
    block = BLOCK_ELEMENTS.get(shape.family, GATED_BLOCK)
    dropout = 3 * shape.heads * length + block.dropout_hidden * shape.hidden if shape.attention_dropout > 0 else 0
    return 4 * (block.hidden * shape.hidden + block.kv * shape.kv_hidden + block.intermediate * shape.intermediate
                + block.head * shape.heads + block.constant + dropout)


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

    def saved(length: int) -> int:
        return block_bytes_per_token(shape, checkpointing, length) * shape.layers + head_saved + 12 * shape.hidden

    logits_copy = autocast_bytes if autocast_bytes != 4 else 0  # float32 logits are their own float32 copy
    recomputed = max(sequences * length * block_bytes_per_token(shape, False, length) for sequences, length in groups) \
        if checkpointing else 0
    if fused_head:
        rows = min(max(tokens), head_block_rows(shape.vocab))
        head = 4 * shape.vocab * shape.hidden + (8 + logits_copy) * rows * shape.vocab
    else:
        head = (8 + logits_copy) * shape.vocab * max(tokens)
    transient = max(head, recomputed)
    reference_pass = reference_tokens * shape.vocab * (4 + 4 + logits_copy) if reference_bytes else 0
    trainable = shape.trainable * shape.weight_bytes // shards
    activations = sum(sequences * length * saved(length) for sequences, length in groups)
    return MemoryEstimate(weights=shape.parameters * shape.weight_bytes // shards, gradients=trainable,
                          optimizer=2 * trainable, reference=reference_bytes, activations=activations,
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
