"""The token cross-entropy every objective uses: F.cross_entropy's values and gradients, without its full-vocabulary
float32 copies."""

import pytest
import torch
import torch.nn.functional as F

from lethe.engine.objectives import mean_nll, next_token_targets


@pytest.fixture(scope="module")
def logits_and_targets(micro_model):
    model, _ = micro_model
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (3, 40))
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0  # a padded row
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    return logits, next_token_targets(ids.masked_fill(mask == 0, -100)[:, 1:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_values_and_gradients_are_those_of_torch_cross_entropy(logits_and_targets, dtype, reduction):
    logits, targets = logits_and_targets
    ours_in = logits.to(dtype).clone().requires_grad_(True)
    torch_in = logits.to(dtype).clone().requires_grad_(True)
    ours = mean_nll(ours_in, targets, reduction=reduction)
    expected = F.cross_entropy(torch_in.float().flatten(0, 1), targets.flatten(), ignore_index=-100,
                               reduction=reduction)
    expected = expected if reduction == "mean" else expected.view(targets.shape)
    assert ours.dtype == torch.float32 and ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)
    if reduction == "none" and dtype == torch.float32:
        assert torch.equal(ours, expected)  # the same log-softmax per token: bit for bit
    weights = torch.rand(ours.shape)  # a gradient that differs per token, as a sequence sum or NPO gives
    (ours * weights).sum().backward()
    (expected * weights).sum().backward()
    assert ours_in.grad.dtype == dtype
    torch.testing.assert_close(ours_in.grad.float(), torch_in.grad.float(), rtol=1e-5, atol=1e-7 if dtype ==
                               torch.float32 else 1e-3)
    assert not ours_in.grad[1, 24:].any()  # ignored positions send back nothing


def test_only_the_logits_are_kept_for_the_backward(logits_and_targets):
    logits, targets = logits_and_targets
    kept = []

    def keep(tensor):
        kept.append(tensor)
        return tensor

    bf16 = logits.bfloat16().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        mean_nll(bf16, targets)
    full_vocabulary = [t for t in kept if t.dim() == 2 and t.shape[-1] == logits.shape[-1]]
    assert len(full_vocabulary) == 1 and full_vocabulary[0].dtype == torch.bfloat16  # no float32 copy
