"""Values and properties of LoRALinear and mark_only_lora_as_trainable (lora.py)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

# in=16, out=12, r=4, alpha=12: the scaling alpha/r = 3 differs from 1 (no scaling), from
# r/alpha = 1/3 and from alpha alone, so each of those mistakes changes the output
IN, OUT, RANK, ALPHA = 16, 12, 4, 12.0


def make_layer(sub, set_lora, *, dropout=0.0, bias=True):
    """A LoRALinear with seeded W0, b, A and B written into it (B non-zero)."""
    layer = sub.lora.LoRALinear(IN, OUT, bias=bias, lora_rank=RANK, lora_alpha=ALPHA, lora_dropout=dropout)
    W, b = torch.randn(OUT, IN) / IN**0.5, 0.1 * torch.randn(OUT)
    A, B = torch.randn(RANK, IN) / IN**0.5, torch.randn(OUT, RANK) / RANK**0.5
    set_lora(layer, W, b if bias else None, A, B)
    return layer, (W, b, A, B)


def test_init_update_is_zero(sub):
    layer = sub.lora.LoRALinear(IN, OUT, lora_rank=RANK, lora_alpha=ALPHA)
    assert torch.count_nonzero(layer.lora_B) == 0, "B must start at zero so that BA = 0 at initialisation"
    assert torch.count_nonzero(layer.lora_A) == layer.lora_A.numel(), (
        "A must start random and non-zero (the paper: random A, zero B); a zero A and B never train")
    assert torch.unique(layer.lora_A).numel() > 1, "A must be random, not constant"
    x = torch.randn(5, IN)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=0, atol=1e-6,
                               msg="at initialisation the LoRA layer must equal its frozen linear layer")


def test_init_A_kaiming_uniform(sub):
    in_features, rank = 64, 8
    layer = sub.lora.LoRALinear(in_features, 10, lora_rank=rank, lora_alpha=8.0)
    # kaiming_uniform_(a=sqrt(5)) draws from U(-b, b) with b = sqrt(6 / ((1 + a^2) * fan_in)) = 1/sqrt(fan_in)
    bound = 1 / math.sqrt(in_features)
    A = layer.lora_A.detach()
    assert A.abs().max() <= bound + 1e-7, (
        "A exceeds the bound of kaiming_uniform_(lora_A, a=math.sqrt(5)); initialise A with it")
    # 512 uniform draws: the largest |value| is within 1% of the bound with overwhelming probability
    assert A.abs().max() > 0.9 * bound, "A is much smaller than kaiming_uniform_(a=math.sqrt(5)) draws"
    assert A.std() > 0.4 * bound, "A looks too concentrated for kaiming_uniform_(a=math.sqrt(5))"


def test_reset_parameters(sub, set_lora):
    layer = sub.lora.LoRALinear(IN, OUT, lora_rank=RANK, lora_alpha=ALPHA)
    set_lora(layer, torch.full((OUT, IN), 5.0), torch.full((OUT,), 5.0), torch.zeros(RANK, IN), torch.ones(OUT, RANK))
    layer.reset_parameters()
    bound = 1 / math.sqrt(IN)  # nn.Linear's and kaiming's bound for this fan-in
    assert layer.weight.abs().max() <= bound + 1e-7, "reset_parameters must re-initialise W0 as nn.Linear does"
    assert layer.bias.abs().max() <= bound + 1e-7, "reset_parameters must re-initialise the bias as nn.Linear does"
    assert torch.count_nonzero(layer.lora_B) == 0, "reset_parameters must set B to zero"
    assert torch.count_nonzero(layer.lora_A) == layer.lora_A.numel(), "reset_parameters must re-draw A (non-zero)"
    assert layer.lora_A.abs().max() <= bound + 1e-7, "reset_parameters must draw A with kaiming_uniform_(a=math.sqrt(5))"


@pytest.mark.parametrize("rank,alpha", [(4, 12.0), (8, 2.0)])
def test_scaling_is_alpha_over_rank(sub, snapshot, rank, alpha):
    layer = sub.lora.LoRALinear(IN, OUT, lora_rank=rank, lora_alpha=alpha)
    snapshot.check("lora_scaling", float(layer.lora_scaling), hint="the handout scales BAx by alpha / r")


def test_forward_values(sub, snapshot, set_lora):
    layer, (W, b, A, B) = make_layer(sub, set_lora)
    x = torch.randn(2, 3, IN)
    out = layer(x)
    base = F.linear(x, W, b)
    update = out - base
    expected = x @ A.T @ B.T  # (2, 3, OUT), unscaled
    if torch.allclose(update, expected, atol=1e-4):
        pytest.fail("the LoRA update is not scaled: multiply BAx by alpha / r", pytrace=False)
    if torch.allclose(update, expected * RANK / ALPHA, atol=1e-4):
        pytest.fail("the LoRA update is scaled by r / alpha; the handout scales it by alpha / r", pytrace=False)
    snapshot.check("forward", out, hint="h = W0 x + b + (alpha / r) * B A x")


def test_dropout_only_on_lora_branch(sub, set_lora):
    n, p = 8, 0.5
    layer = sub.lora.LoRALinear(n, n, lora_rank=n, lora_alpha=float(n), lora_dropout=p)  # scaling 1
    W, b = torch.randn(n, n), torch.randn(n)
    x = torch.randn(64, n) + 3.0  # no entry near zero: a dropped entry is told apart from a kept one
    layer.train()
    set_lora(layer, W, b, torch.zeros(n, n), torch.zeros(n, n))
    torch.testing.assert_close(layer(x), F.linear(x, W, b), rtol=0, atol=1e-5,
                               msg="with a zero update the output must be W0 x + b exactly: "
                                   "dropout must not touch the frozen path")
    # A = B = I: the update is dropout(x) itself, each entry 0 or x / (1 - p)
    set_lora(layer, W, b, torch.eye(n), torch.eye(n))
    update = layer(x) - F.linear(x, W, b)
    dropped = update.abs() < 1e-3
    kept = (update - x / (1 - p)).abs() < 1e-3
    assert bool((dropped | kept).all()), "the LoRA branch must see dropout(x) (entries 0 or x / (1 - p))"
    assert 0.25 < dropped.float().mean() < 0.75, "in training mode, apply lora_dropout to the LoRA branch input"


def test_eval_merges_weights(sub, snapshot, set_lora):
    layer, (W, _b, A, B) = make_layer(sub, set_lora)
    x = torch.randn(4, IN)
    layer.train()
    out_train = layer(x)
    returned = layer.eval()
    assert layer.training is False, "eval() must put the layer in evaluation mode"
    assert layer.has_weights_merged is True, "eval() must merge the update and set has_weights_merged"
    torch.testing.assert_close(layer.weight.detach(), W + (ALPHA / RANK) * B @ A, rtol=0, atol=1e-5,
                               msg="after eval() the weight must be W0 + (alpha / r) B A")
    torch.testing.assert_close(layer(x), out_train, rtol=1e-5, atol=1e-5,
                               msg="the merged layer must compute what the un-merged one did")
    assert returned is None or returned is layer
    snapshot.check("merged_weight", layer.weight.detach())


def test_eval_twice_merges_once(sub, set_lora):
    layer, (W, b, A, B) = make_layer(sub, set_lora)
    layer.eval()
    once = layer.weight.detach().clone()
    layer.eval()
    torch.testing.assert_close(layer.weight.detach(), once, rtol=0, atol=1e-5,
                               msg="calling eval() twice must not add the update twice")
    x = torch.randn(3, IN)
    torch.testing.assert_close(layer(x), F.linear(x, W + (ALPHA / RANK) * B @ A, b), rtol=1e-5, atol=1e-5,
                               msg="after eval() twice the output must still be W0 x + b + (alpha / r) B A x")


def test_train_unmerges_weights(sub, set_lora):
    layer, (W, _b, A, B) = make_layer(sub, set_lora)
    layer.eval()
    layer.train()
    assert layer.training is True, "train() must put the layer in training mode"
    assert layer.has_weights_merged is False, "train() must un-merge the update and clear has_weights_merged"
    # W0 + dW - dW loses a few float32 ulps of |W0 + dW|; dW itself is O(1), so 1e-5 separates them
    torch.testing.assert_close(layer.weight.detach(), W, rtol=0, atol=1e-5,
                               msg="train() after eval() must give back W0 (subtract the merged update)")
    layer.train()
    torch.testing.assert_close(layer.weight.detach(), W, rtol=0, atol=1e-5,
                               msg="calling train() twice must not subtract the update twice")
    layer.eval()
    torch.testing.assert_close(layer.weight.detach(), W + (ALPHA / RANK) * B @ A, rtol=0, atol=1e-5,
                               msg="eval() -> train() -> eval() must merge the update again, once")


def test_train_from_start_keeps_weights(sub, set_lora):
    layer, (W, b, A, B) = make_layer(sub, set_lora)
    layer.train()
    torch.testing.assert_close(layer.weight.detach(), W, rtol=0, atol=0,
                               msg="train() on a layer that was never merged must leave W0 alone")
    x = torch.randn(3, IN)
    torch.testing.assert_close(layer(x), F.linear(x, W, b) + (ALPHA / RANK) * x @ A.T @ B.T, rtol=1e-5, atol=1e-5)


def test_gradients_of_A_and_B(sub, snapshot, set_lora):
    layer, _ = make_layer(sub, set_lora)
    sub.lora.mark_only_lora_as_trainable(layer)
    x, g = torch.randn(5, IN), torch.randn(5, OUT)
    (layer(x) * g).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None, "W0 and b must stay frozen"
    snapshot.check("grad_A", layer.lora_A.grad)
    snapshot.check("grad_B", layer.lora_B.grad)


def test_gradients_flow_only_to_lora(sub, set_lora):
    lora = sub.lora
    model = nn.Sequential(lora.LoRALinear(8, 8, lora_rank=2, lora_alpha=4.0), nn.LayerNorm(8),
                          lora.LoRALinear(8, 4, lora_rank=2, lora_alpha=4.0), nn.Linear(4, 3), nn.Embedding(3, 3))
    with torch.no_grad():
        for m in (model[0], model[2]):
            m.lora_B.normal_()  # a non-zero B, so that A receives a gradient too
    returned = lora.mark_only_lora_as_trainable(model)
    model[3](model[2](model[1](model[0](torch.randn(6, 8))))).square().sum().backward()
    for name, param in model.named_parameters():
        is_lora = name.endswith(("lora_A", "lora_B"))
        assert param.requires_grad == is_lora, (
            f"{name}: requires_grad must be {is_lora} after mark_only_lora_as_trainable")
        if is_lora:
            assert param.grad is not None and torch.count_nonzero(param.grad) > 0, f"{name} got no gradient"
        else:
            assert param.grad is None, f"{name} is frozen but received a gradient"
    assert returned is None or returned is model


def test_rank_zero_has_no_update(sub):
    layer = sub.lora.LoRALinear(7, 5, lora_rank=0, lora_alpha=16.0, lora_dropout=0.5)
    assert sorted(n for n, _ in layer.named_parameters()) == ["bias", "weight"], (
        "with lora_rank=0 the layer has only the weight and the bias")
    W = layer.weight.detach().clone()
    layer.eval()
    layer.train()
    layer.eval()
    torch.testing.assert_close(layer.weight.detach(), W, rtol=0, atol=0, msg="a rank-0 layer must never change its weight")
    x = torch.randn(4, 7)
    torch.testing.assert_close(layer(x), F.linear(x, W, layer.bias), rtol=0, atol=1e-6)
