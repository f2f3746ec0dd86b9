"""NPO and the adversarial method as Lethe computed them before their reference work was cached: the frozen
original model forwarded over every forget batch at every step. The benchmark's baseline and the tests' oracle
for the cached methods' values."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lethe.unlearning.methods import AdversarialSamples, NegativePreferenceOptimization, sequence_logprob


class PerStepAdversarial(AdversarialSamples):
    def adversarial_targets(self, batch):
        logits = self.reference_logits(batch)[:, :-1]
        true = batch["input_ids"][:, 1:]
        return logits.scatter(-1, true.unsqueeze(-1), float("-inf")).argmax(-1)


class PerStepNPO(NegativePreferenceOptimization):
    def forget_loss(self, output, batch):
        reference = sequence_logprob(self.reference_logits(batch), batch)
        ratio = sequence_logprob(output.logits, batch) - reference
        beta = self.args.npo_beta
        return -(2 / beta) * F.logsigmoid(-beta * ratio).mean()


PER_STEP = {"npo": PerStepNPO, "adversarial": PerStepAdversarial}


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    reference = type(model)(model.config)
    reference.load_state_dict(model.state_dict())
    return reference.requires_grad_(False).eval()
