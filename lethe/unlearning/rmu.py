"""RMU (Li et al., 2024, "The WMDP Benchmark"): misdirect one layer's activations on forget text.

At the output of decoder layer ℓ, forget activations are pushed towards c·u, u a fixed random unit vector, and
retain activations are held at the frozen original's:

    loss = mean ‖h_ℓ(forget) − c·u‖² / d + α · mean ‖h_ℓ(retain) − h_ℓ^orig(retain)‖² / d

(means over real tokens; WMDP's `mse_loss`, which also averages the d hidden dimensions). Only a few layers at or
below ℓ train: by default the MLPs of layers ℓ−2..ℓ (WMDP's released code updates their down projections only:
`rmu_params: mlp.down_proj`). Nothing above ℓ is read, so a bare model's forward stops at ℓ.
"""

from __future__ import annotations

import re
from typing import Annotated

import torch
from pydantic import AfterValidator, Field

from lethe.config import MethodArgs, Strict, UnlearnConfig
from lethe.engine.head import NO_POSITIONS, FusedHead
from lethe.engine.losses import Batch
from lethe.errors import LetheError
from lethe.unlearning.methods import MethodContext, Unlearning, methods


class ReachedLayer(Exception):
    """Raised by the hook that read layer ℓ, to end a forward that has nothing left to compute."""


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's stack of decoder blocks: its ModuleList as long as its config's layer count (Llama `layers`,
    GPT-2 `h`, GPT-NeoX `layers`, ...), found through any wrapper (DDP, PEFT, a fused head, a placed reference)."""
    model = model.model if isinstance(model, FusedHead) else model
    count = None
    for module in model.modules():
        config = getattr(module, "config", None)
        if count is None and config is not None and hasattr(config, "num_hidden_layers"):
            count = config.num_hidden_layers
        if count is not None and isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise LetheError("rmu reads a decoder layer's output, but the model has no stack of num_hidden_layers blocks")


def activations_at(model, layer: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """(B, T, d): the output of `layer` in the model's forward on `batch`.

    A bare Hugging Face model, or any model outside autograd (the frozen original), stops at the layer (the hook
    raises); a wrapped trained one (DDP, FSDP: their bookkeeping after the forward must run) goes to the end, past
    its head only where a fused head cannot skip it.
    """
    from transformers import PreTrainedModel  # here: importing the methods stays light

    bare = isinstance(model.model if isinstance(model, FusedHead) else model, PreTrainedModel)
    stops = bare or not torch.is_grad_enabled()
    kept = []

    def keep(_module, _inputs, output):
        kept.append(output[0] if isinstance(output, tuple) else output)
        if stops:
            raise ReachedLayer

    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if isinstance(model, FusedHead):
        inputs["logits_to_keep"] = NO_POSITIONS.to(batch["input_ids"].device)
    handle = layer.register_forward_hook(keep)  # removed before the backward, which gradient checkpointing reruns
    try:
        model(**inputs)
    except ReachedLayer:
        pass
    finally:
        handle.remove()
    return kept[0]


def masked_mse(activations: torch.Tensor, target: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean over real tokens of the mean squared difference over the hidden dimensions (float32)."""
    per_token = (activations.float() - target.float()).pow(2).mean(-1)
    mask = batch["attention_mask"].to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum()


def steering_vector(hidden_size: int, coefficient: float, seed: int) -> torch.Tensor:
    """c·u, u uniform on [0, 1)^d normalised to unit length, as WMDP's code draws it, from a seeded generator."""
    direction = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed))
    return coefficient * direction / direction.norm()


def regular_expression(value: str) -> str:
    """Checked when the config is read (an Annotated validator travels into the schema of every method's arguments)."""
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return value


@methods.register("rmu")
class RepresentationMisdirection(Unlearning):
    """RMU (Li et al., 2024): layer ℓ's forget activations pushed towards c·u, its retain activations held at the
    frozen original's (weight α); only the parameters `rmu_params` of layers `rmu_trainable_layers` train."""

    retain_term = "activations"  # its own retain term: an MSE to the original's activations at layer ℓ
    needs_reference = True

    class Args(Strict):
        rmu_layer: int | None = Field(None, ge=0, description="ℓ, the decoder layer (0-based) whose output is "
                                      "steered (default ⌊7·L/32⌋ of L layers: WMDP's 7 of Zephyr-7B's 32)")
        rmu_steering: float = Field(6.5, gt=0, description="c, the norm of the forget target c·u; scale it with the "
                                    "activations' norm at ℓ (WMDP: 6.5 for Zephyr-7B)")
        rmu_alpha: float = Field(1200.0, ge=0, description="α, the weight of the retain activations' MSE "
                                 "(WMDP: 1200 for Zephyr-7B); the shared retain_weight does not apply")
        rmu_trainable_layers: list[int] | None = Field(
            None, min_length=1, description="layers whose parameters train, all ≤ ℓ (default ℓ−2..ℓ)")
        rmu_params: Annotated[str, AfterValidator(regular_expression)] = Field(
            "mlp", min_length=1, description="regular expression searched in each parameter's name within its layer: "
            "which of those layers' parameters train")

    def __init__(self, context: MethodContext, args: MethodArgs) -> None:
        if args.retain_term in ("gd", "kl"):
            raise LetheError("rmu's retain term is its own (an MSE to the original's activations, weight rmu_alpha); "
                             "retain_term can only turn it off (none)")
        super().__init__(context, args)
        self.seed = 0  # of the steering direction; train.seed once `prepare` has run
        self.layer = self.args.rmu_layer  # ℓ; the default's value once `prepare` has seen the model

    def prepare(self, model: torch.nn.Module, config: UnlearnConfig, pretrain: dict | None) -> None:
        """Freeze everything but the chosen parameters, and draw u from train.seed."""
        if config.train.lora is not None:
            raise LetheError("rmu chooses which parameters train (rmu_trainable_layers, rmu_params); unset train.lora")
        layers = decoder_layers(model)
        ell = self.layer = len(layers) * 7 // 32 if self.args.rmu_layer is None else self.args.rmu_layer
        if ell >= len(layers):
            raise LetheError(f"rmu_layer {ell} is past the model's last layer ({len(layers) - 1})")
        chosen = self.args.rmu_trainable_layers or list(range(max(0, ell - 2), ell + 1))
        if not all(0 <= i <= ell for i in chosen):
            raise LetheError(f"rmu_trainable_layers {chosen} must lie in 0..{ell}: a layer above rmu_layer "
                             "gets no gradient from the loss")
        model.requires_grad_(False)
        pattern = re.compile(self.args.rmu_params)
        trained = [p.requires_grad_(True) for i in chosen for name, p in layers[i].named_parameters()
                   if pattern.search(name)]
        if not trained:
            raise LetheError(f"rmu_params {self.args.rmu_params!r} matches no parameter of layers {chosen} "
                             f"(their names: {', '.join(name for name, _ in layers[chosen[0]].named_parameters())})")
        self.seed = config.train.seed

    def __call__(self, model, batches: dict[str, Batch]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.layer is None:
            raise LetheError("rmu's default layer depends on the model: call prepare(model, ...) first")
        ell = self.layer
        forget_batch = batches["forget"]
        forget_h = activations_at(model, decoder_layers(model)[ell], forget_batch)
        control = steering_vector(forget_h.shape[-1], self.args.rmu_steering, self.seed).to(forget_h.device)
        loss = forget = masked_mse(forget_h, control, forget_batch)
        logs = {"forget_loss": forget.item()}
        if self.retain_term is not None:
            retain_batch = batches["retain"]
            retain_h = activations_at(model, decoder_layers(model)[ell], retain_batch)
            self.reference_tokens += int(retain_batch["attention_mask"].sum())
            with torch.no_grad():
                reference = self.context.reference
                original = activations_at(reference, decoder_layers(reference)[ell], retain_batch)
            retain = masked_mse(retain_h, original.to(retain_h.device), retain_batch)
            loss = forget + self.args.rmu_alpha * retain
            logs["retain_activations"] = retain.item()
        return loss, {"loss": loss.item(), **logs}
