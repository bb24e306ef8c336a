"""Values and properties of LoRALinear and mark_only_lora_as_trainable (lora.py)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

# in=16, out=12, r=4, alpha=12: the scaling alpha/r = 3 differs from 1 (no scaling), from
# r/alpha = 1/3 and from alpha alone, so each of those mistakes changes the output
IN, OUT, RANK, ALPHA = 16, 12, 4, 12.0
TOL = {"rtol": 0.0, "atol": 1e-5}


def make_layer(sub, set_lora, draw, *, dropout=0.0, bias=True, seed=0):
    """A LoRALinear with W0, b, A and B drawn from the test's generators (B non-zero)."""
    layer = sub.lora.LoRALinear(IN, OUT, bias=bias, lora_rank=RANK, lora_alpha=ALPHA, lora_dropout=dropout)
    W, b = draw.randn(OUT, IN, seed=seed + 1, scale=IN**-0.5), draw.randn(OUT, seed=seed + 2, scale=0.1)
    A, B = draw.randn(RANK, IN, seed=seed + 3, scale=IN**-0.5), draw.randn(OUT, RANK, seed=seed + 4, scale=RANK**-0.5)
    set_lora(layer, W, b if bias else None, A, B)
    return layer, (W, b, A, B)


def test_init_update_is_zero(sub, snapshot, draw):
    layer = sub.lora.LoRALinear(IN, OUT, lora_rank=RANK, lora_alpha=ALPHA)
    assert torch.count_nonzero(layer.lora_B) == 0, "B must start at zero so that BA = 0 at initialisation"
    snapshot.check("lora_B", layer.lora_B.detach(), hint="B starts at zero (the paper: random A, zero B)")
    snapshot.judge("lora_A", layer.lora_A.detach(), "random_init", min_size=RANK * IN,
                   what="lora_A at initialisation")
    x = draw.randn(5, IN, seed=7)
    snapshot.judge("frozen_output", F.linear(x, layer.weight, layer.bias).detach(), "finite")
    snapshot.judge("output", layer(x).detach(), "close_to_earlier", earlier="frozen_output", atol=1e-6,
                   what="at initialisation the LoRA layer's output and its frozen linear layer's output")


def test_init_A_random(sub, snapshot):
    # the handout describes A's initialisation as Gaussian and as kaiming_uniform_: both pass
    in_features, rank = 64, 8
    layer = sub.lora.LoRALinear(in_features, 10, lora_rank=rank, lora_alpha=8.0)
    snapshot.check("A_shape", list(layer.lora_A.shape))
    snapshot.judge("lora_A", layer.lora_A.detach(), "random_init", min_size=rank * in_features,
                   what="lora_A at initialisation")


def test_reset_parameters(sub, snapshot, set_lora):
    n_in, n_out = 64, 48
    layer = sub.lora.LoRALinear(n_in, n_out, lora_rank=RANK, lora_alpha=ALPHA)
    set_lora(layer, torch.full((n_out, n_in), 5.0), torch.full((n_out,), 5.0), torch.zeros(RANK, n_in),
             torch.ones(n_out, RANK))
    layer.reset_parameters()
    bound = 1 / math.sqrt(n_in)  # nn.Linear's bound for this fan-in
    snapshot.judge("weight", layer.weight.detach(), "linear_init", bound=bound,
                   what="the weight after reset_parameters()")
    snapshot.judge("bias", layer.bias.detach(), "linear_init", bound=bound, min_std=0.2,
                   what="the bias after reset_parameters()")
    snapshot.check("lora_B", layer.lora_B.detach(), hint="reset_parameters must set B to zero")
    snapshot.judge("lora_A", layer.lora_A.detach(), "random_init", min_size=RANK * n_in,
                   what="lora_A after reset_parameters()")


@pytest.mark.parametrize("rank,alpha", [(4, 12.0), (8, 2.0)])
def test_scaling_is_alpha_over_rank(sub, snapshot, rank, alpha):
    layer = sub.lora.LoRALinear(IN, OUT, lora_rank=rank, lora_alpha=alpha)
    snapshot.check("lora_scaling", float(layer.lora_scaling), hint="the handout scales BAx by alpha / r")


def test_forward_values(sub, snapshot, set_lora, draw):
    layer, (W, b, A, B) = make_layer(sub, set_lora, draw)
    x = draw.randn(2, 3, IN, seed=11)
    out = layer(x)
    assert isinstance(out, torch.Tensor), "forward must return a tensor"
    update = out - F.linear(x, W, b)
    expected = x @ A.T @ B.T  # (2, 3, OUT), unscaled
    if torch.allclose(update, expected, atol=1e-4):
        pytest.fail("the LoRA update is not scaled: multiply BAx by alpha / r", pytrace=False)
    if torch.allclose(update, expected * RANK / ALPHA, atol=1e-4):
        pytest.fail("the LoRA update is scaled by r / alpha; the handout scales it by alpha / r", pytrace=False)
    snapshot.check("forward", out.detach(), hint="h = W0 x + b + (alpha / r) * B A x")


def test_dropout_only_on_lora_branch(sub, snapshot, set_lora, draw):
    # square layer with random orthogonal A and B (not the identity): the update reveals where
    # dropout is applied. alpha = r, so the scaling is 1 whichever way it is written
    n, p = 8, 0.5
    layer = sub.lora.LoRALinear(n, n, lora_rank=n, lora_alpha=float(n), lora_dropout=p)
    W, b = draw.randn(n, n, seed=21), draw.randn(n, seed=22)
    x = draw.randn(64, n, seed=23) + 3.0  # no entry near zero: a dropped entry is told apart from a kept one
    layer.train()
    set_lora(layer, W, b, torch.zeros(n, n), torch.zeros(n, n))
    snapshot.check("frozen_path", layer(x).detach(),
                   hint="with a zero update the output must be W0 x + b exactly: dropout must not touch the "
                        "frozen path")
    A, B = draw.orthogonal(n, seed=24), draw.orthogonal(n, seed=25)
    set_lora(layer, W, b, A, B)
    snapshot.check("inputs", {"x": x, "W": W, "b": b, "A": A, "B": B})
    out = layer(x)
    assert isinstance(out, torch.Tensor) and out.shape == (64, n), "forward must return a (64, 8) tensor here"
    snapshot.judge("train_output", out.detach(), "dropout_on_lora_input", inputs="inputs", p=p, scaling=1.0)


def test_eval_merges_weights(sub, snapshot, set_lora, draw):
    layer, _ = make_layer(sub, set_lora, draw)
    x = draw.randn(4, IN, seed=31)
    layer.train()
    out_train = layer(x)
    snapshot.check("out_train", out_train.detach(), **TOL)
    returned = layer.eval()
    assert returned is None or returned is layer, "eval() must return the layer (or nothing)"
    snapshot.check("mode", {"training": layer.training, "has_weights_merged": layer.has_weights_merged},
                   hint="eval() must set evaluation mode, merge the update and set has_weights_merged")
    snapshot.check("merged_weight", layer.weight.detach(), **TOL, hint="after eval() the weight is W0 + (alpha / r) B A")
    snapshot.check("out_eval", layer(x).detach(), rtol=1e-5, atol=1e-5,
                   hint="the merged layer must compute what the un-merged one did")


def test_eval_twice_merges_once(sub, snapshot, set_lora, draw):
    layer, _ = make_layer(sub, set_lora, draw)
    layer.eval()
    layer.eval()
    snapshot.check("weight", layer.weight.detach(), **TOL, hint="calling eval() twice must not add the update twice")
    x = draw.randn(3, IN, seed=41)
    snapshot.check("output", layer(x).detach(), rtol=1e-5, atol=1e-5,
                   hint="after eval() twice the output must still be W0 x + b + (alpha / r) B A x")


def test_train_unmerges_weights(sub, snapshot, set_lora, draw):
    layer, _ = make_layer(sub, set_lora, draw)
    layer.eval()
    layer.train()
    snapshot.check("mode", {"training": layer.training, "has_weights_merged": layer.has_weights_merged},
                   hint="train() must set training mode, un-merge the update and clear has_weights_merged")
    # W0 + dW - dW loses a few float32 ulps of |W0 + dW|; dW itself is O(1), so 1e-5 separates them
    snapshot.check("weight_after_train", layer.weight.detach(), **TOL,
                   hint="train() after eval() must give back W0 (subtract the merged update)")
    layer.train()
    snapshot.check("weight_after_train_twice", layer.weight.detach(), **TOL,
                   hint="calling train() twice must not subtract the update twice")
    layer.eval()
    snapshot.check("weight_after_eval_again", layer.weight.detach(), **TOL,
                   hint="eval() -> train() -> eval() must merge the update again, once")


def test_train_from_start_keeps_weights(sub, snapshot, set_lora, draw):
    layer, _ = make_layer(sub, set_lora, draw)
    layer.train()
    snapshot.check("weight", layer.weight.detach(), rtol=0.0, atol=0.0,
                   hint="train() on a layer that was never merged must leave W0 alone")
    x = draw.randn(3, IN, seed=51)
    snapshot.check("output", layer(x).detach(), rtol=1e-5, atol=1e-5)


def test_gradients_of_A_and_B(sub, snapshot, set_lora, draw):
    layer, _ = make_layer(sub, set_lora, draw)
    sub.lora.mark_only_lora_as_trainable(layer)
    x, g = draw.randn(5, IN, seed=61), draw.randn(5, OUT, seed=62)
    (layer(x) * g).sum().backward()
    snapshot.check("frozen_grads", [layer.weight.grad is None, layer.bias.grad is None],
                   hint="W0 and b must stay frozen (no gradient)")
    snapshot.check("grad_A", layer.lora_A.grad)
    snapshot.check("grad_B", layer.lora_B.grad)


def test_gradients_flow_only_to_lora(sub, snapshot, draw):
    lora = sub.lora
    model = nn.Sequential(lora.LoRALinear(8, 8, lora_rank=2, lora_alpha=4.0), nn.LayerNorm(8),
                          lora.LoRALinear(8, 4, lora_rank=2, lora_alpha=4.0), nn.Linear(4, 3), nn.Embedding(3, 3))
    with torch.no_grad():
        for i, m in ((0, model[0]), (2, model[2])):
            m.lora_B.copy_(draw.randn(*m.lora_B.shape, seed=70 + i))  # a non-zero B, so that A receives a gradient
    returned = lora.mark_only_lora_as_trainable(model)
    snapshot.check("returns_model_or_none", returned is None or returned is model)
    snapshot.check("requires_grad", {name: p.requires_grad for name, p in model.named_parameters()},
                   hint="only lora_A and lora_B may require a gradient")
    model[3](model[2](model[1](model[0](draw.randn(6, 8, seed=72))))).square().sum().backward()
    snapshot.check("has_gradient", {name: p.grad is not None and bool(torch.count_nonzero(p.grad) > 0)
                                    for name, p in model.named_parameters()},
                   hint="A and B must receive gradients; frozen parameters none")


def test_rank_zero_has_no_update(sub, snapshot, draw):
    layer = sub.lora.LoRALinear(7, 5, lora_rank=0, lora_alpha=16.0, lora_dropout=0.5)
    snapshot.check("parameters", sorted(n for n, _ in layer.named_parameters()),
                   hint="with lora_rank=0 the layer has only the weight and the bias")
    snapshot.judge("weight", layer.weight.detach().clone(), "linear_init", bound=1 / math.sqrt(7))
    layer.eval()
    layer.train()
    layer.eval()
    snapshot.judge("weight_after_modes", layer.weight.detach(), "close_to_earlier", earlier="weight",
                   what="a rank-0 layer's weight before and after eval() / train() / eval()")
    x = draw.randn(4, 7, seed=81)
    snapshot.judge("linear", F.linear(x, layer.weight, layer.bias).detach(), "finite")
    snapshot.judge("output", layer(x).detach(), "close_to_earlier", earlier="linear", atol=1e-6,
                   what="a rank-0 layer's output and the plain linear map's output")
