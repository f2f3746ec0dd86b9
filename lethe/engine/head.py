"""The training model seen through its head's input: how a fused head (lethe.engine.losses) reaches a Hugging Face
model's final hidden states without computing its logits."""

from __future__ import annotations

import inspect

import torch

from lethe.engine.losses import Batch, Prediction

NO_POSITIONS = torch.empty(0, dtype=torch.long)  # `logits_to_keep` that keeps none: the model skips its head


def predict(model, batch: Batch) -> Prediction:
    """The training model's output on a batch: through its fused head when the trainer gave it one."""
    if isinstance(model, FusedHead):
        return model.predict(batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return Prediction(computed_logits=logits)


class FusedHead:
    """The training model (Accelerate's wrapper, if any) whose forward stops at the head's input.

    The forward still goes through the wrapper, so DDP synchronises gradients as usual; a hook on the decoder keeps
    its output, and `logits_to_keep` with no positions makes the model skip its head.
    """

    def __init__(self, model: torch.nn.Module, decoder: torch.nn.Module, head: torch.nn.Linear) -> None:
        self.model, self.decoder, self.head = model, decoder, head

    def __call__(self, **inputs):
        return self.model(**inputs)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, d): the head's input, from a forward that skips the head."""
        return run_to_head(self.decoder, lambda: self.model(
            input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=NO_POSITIONS.to(input_ids.device)))

    def predict(self, batch: Batch) -> Prediction:
        return Prediction(hidden=self.hidden_states(batch["input_ids"], batch["attention_mask"]), head=self.head)


def run_to_head(decoder: torch.nn.Module, forward) -> torch.Tensor:
    """The decoder's output during `forward()` (its last hidden states: the head's input)."""
    kept = []

    def keep(_module, _inputs, output):
        kept.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    handle = decoder.register_forward_hook(keep)
    try:
        forward()
    finally:
        handle.remove()
    return kept[-1]


def plain_head(unwrapped: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear] | str:
    """(decoder, head) of a model built as a decoder followed by a linear head that `logits_to_keep` can skip; else
    why not. Structure only: `head_parts` also checks the numbers."""
    causal_lm = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped  # PEFT
    head = causal_lm.get_output_embeddings() if hasattr(causal_lm, "get_output_embeddings") else None
    decoder = getattr(causal_lm, "base_model", causal_lm)
    if type(head) is not torch.nn.Linear or decoder is causal_lm:
        return "the model has no plain linear head after a separate decoder"
    if "logits_to_keep" not in inspect.signature(causal_lm.forward).parameters:
        return "the model's forward takes no logits_to_keep"
    return decoder, head


def head_parts(unwrapped: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear] | str:
    """`plain_head`, and the model's logits on a few tokens equal to its head applied to its decoder's output (a
    soft-capped or scaled head fails); run where the model will run, since a bfloat16 forward on a CPU is slow."""
    parts = plain_head(unwrapped)
    if isinstance(parts, str):
        return parts
    decoder, head = parts
    causal_lm = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
    ids = torch.arange(min(16, head.out_features), device=head.weight.device)[None]
    was_training = causal_lm.training
    causal_lm.eval()
    try:
        with torch.no_grad():
            logits = []
            hidden = run_to_head(decoder, lambda: logits.append(causal_lm(input_ids=ids).logits))
            agree = torch.allclose(head(hidden).float(), logits[0].float(), rtol=1e-3, atol=1e-4)
    finally:
        causal_lm.train(was_training)
    if not agree:
        return "the model's logits are not its head applied to its decoder's output (scaled or capped?)"
    return parts


def fused_head(model: torch.nn.Module, unwrapped: torch.nn.Module) -> tuple[FusedHead | None, str]:
    """`model` (possibly wrapped) with a fused head, or None and why not (see `head_parts`)."""
    parts = head_parts(unwrapped)
    return (None, parts) if isinstance(parts, str) else (FusedHead(model, *parts), "fused")
