"""Problem 2, question 1 (gpt1_solution.py): LayerNorm.forward.

Values are compared with the reference's by the grading parent (the project's tests check that
the reference follows the handout's formula). nn.LayerNorm and every function that calls
torch.layer_norm are disabled while these tests run (the rubric's rule).
"""
import torch
from mila_checks import assert_shape

HINT = (
    "LayerNorm: (x - mean) / sqrt(var + eps) * weight + bias over the last dimension, with "
    "the biased variance (divide by n; torch.var divides by n - 1 unless unbiased=False) "
    "and eps inside the square root."
)


def _layer_norm(sub, hidden_size, weight=None, bias=None):
    layer_norm = sub.gpt1.LayerNorm(hidden_size)
    with torch.no_grad():
        if weight is not None:
            layer_norm.weight.copy_(weight)
        if bias is not None:
            layer_norm.bias.copy_(bias)
    return layer_norm


def test_layernorm_default_parameters(sub, snapshot):
    x = 3.0 * torch.randn(2, 5, 16) + 1.0
    layer_norm = _layer_norm(sub, 16)
    with torch.no_grad():
        y = layer_norm(x)
    assert_shape(y, x.shape, "LayerNorm output")
    snapshot.check("outputs", y, hint=HINT)


def test_layernorm_affine(sub, snapshot):
    x = 2.0 * torch.randn(3, 4, 24) - 0.5
    weight, bias = 1.0 + 0.5 * torch.randn(24), torch.randn(24)
    layer_norm = _layer_norm(sub, 24, weight, bias)
    with torch.no_grad():
        y = layer_norm(x)
    hint = HINT + " Scale by self.weight and shift by self.bias after normalising."
    assert_shape(y, x.shape, "LayerNorm output")
    snapshot.check("outputs", y, hint=hint)


def test_layernorm_small_variance(sub, snapshot):
    # Rows whose variance is below, near and above eps = 1e-5: where eps goes decides the
    # result (1 / sqrt(var + eps) is not 1 / (sqrt(var) + eps)).
    stds = torch.tensor([1e-3, 3e-3, 1e-2, 1.0]).reshape(4, 1, 1)
    x = stds * torch.randn(4, 3, 32) + 0.01
    weight, bias = 1.0 + 0.5 * torch.randn(32), 0.1 * torch.randn(32)
    layer_norm = _layer_norm(sub, 32, weight, bias)
    with torch.no_grad():
        y = layer_norm(x)
    assert_shape(y, x.shape, "LayerNorm output")
    snapshot.check("outputs", y, hint=HINT)


def test_layernorm_shapes_gradients_and_no_side_effects(sub, snapshot):
    weight, bias = 1.0 + 0.5 * torch.randn(8), torch.randn(8)
    inputs = [torch.randn(shape) for shape in [(5, 8), (2, 3, 2, 2, 8)]]  # before any submission code
    for index, x in enumerate(inputs):
        shape = tuple(x.shape)
        layer_norm = _layer_norm(sub, 8, weight, bias)
        y = layer_norm(x)
        assert_shape(y, shape, f"LayerNorm output for an input of shape {shape}")
        snapshot.check(f"outputs_{index}", y, hint=HINT)
        # the input as it is after the call: LayerNorm must not modify it in place
        snapshot.check(f"input_after_{index}", x, rtol=0, atol=0,
                       hint="LayerNorm.forward modified its input in place; it must return a new tensor.")
        y.pow(2).sum().backward()
        for name in ("weight", "bias"):
            snapshot.check(f"{name}_gradient_{index}", getattr(layer_norm, name).grad,
                           hint=f"the gradient must reach LayerNorm.{name}: use self.{name} differentiably.")
