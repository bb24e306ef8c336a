"""Shared checks for the IFT6135 A2 hidden tests: float64 maths, known weights, properties.

The expected values written here in float64 are the handout's formulas, not the reference
solution; the snapshots recorded from the reference must agree with them.
"""
import math
import zlib
from itertools import permutations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# -- comparing ------------------------------------------------------------------------------

def assert_shape(value, shape, what):
    __tracebackhide__ = True
    if not isinstance(value, torch.Tensor):
        raise AssertionError(  # noqa: TRY004 - a failed check, reported as a test failure
            f"{what} should be a torch tensor of shape {tuple(shape)}, got {type(value).__name__}"
        )
    if tuple(value.shape) != tuple(shape):
        raise AssertionError(f"{what} has shape {tuple(value.shape)}, expected {tuple(shape)}")


def assert_close(actual, expected, what, *, rtol=1e-4, atol=1e-5, hint=""):
    """Compare with float64 maths; the message says where and how much, never the values."""
    __tracebackhide__ = True
    assert_shape(actual, expected.shape, what)
    if not torch.isfinite(actual).all():
        raise AssertionError(f"{what} contains NaN or inf. {hint}".strip())
    error = (actual.detach().double() - expected.double()).abs()
    bad = error > atol + rtol * expected.double().abs()
    if bad.any():
        where = tuple(int(i) for i in torch.unravel_index(error.argmax(), error.shape))
        raise AssertionError(
            f"{what} differs from the handout's formula: max abs error {error.max().item():.3g} "
            f"at index {where}, {bad.double().mean().item():.0%} of the entries off "
            f"(allowed: {atol:g} + {rtol:g}*|expected|). {hint}".strip()
        )


# -- deterministic weights ------------------------------------------------------------------

def fill_parameters(module, scales=None, default_scale=0.3):
    """Overwrite every parameter with values seeded by its name (not by its position).

    Tied parameters are filled once, under their first name (the embedding, which the
    provided __init__ registers before the classifier). `scales` maps a name prefix to the
    standard deviation used for it.
    """
    scales = scales or {}
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            scale = next((s for prefix, s in scales.items() if name.startswith(prefix)), default_scale)
            generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))
    return module


def padded_mask(lengths, sequence_length):
    """(B, S) float mask with the first lengths[b] positions of row b set to 1."""
    positions = torch.arange(sequence_length)
    return (positions[None, :] < torch.tensor(lengths)[:, None]).float()


# -- float64 maths of the handout -----------------------------------------------------------

def layer_norm_f64(x, weight, bias, eps):
    x = x.double()
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased
    return (x - mean) / torch.sqrt(variance + eps) * weight.double() + bias.double()


def causal_attention_weights_f64(queries, keys):
    queries, keys = queries.double(), keys.double()
    sequence_length, head_size = queries.shape[-2], queries.shape[-1]
    scores = queries @ keys.transpose(-2, -1) / math.sqrt(head_size)  # (B, H, S, S)
    allowed = torch.ones(sequence_length, sequence_length, dtype=torch.bool).tril()
    return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)


def split_heads_f64(x, num_heads):
    batch_size, sequence_length, width = x.shape
    return x.double().reshape(batch_size, sequence_length, num_heads, width // num_heads).transpose(1, 2)


def merge_heads_f64(y):
    batch_size, num_heads, sequence_length, dim = y.shape
    return y.double().transpose(1, 2).reshape(batch_size, sequence_length, num_heads * dim)


def attention_f64(queries, keys, values):
    """merge_heads(softmax-with-causal-mask(Q K^T / sqrt(hd)) V), inputs (B, H, S, hd)."""
    weights = causal_attention_weights_f64(queries, keys)
    return merge_heads_f64(weights @ values.double())


def sequence_mean_nll_f64(log_probas, targets, mask):
    """The handout's loss: each sequence's mean NLL over its real tokens, then batch mean."""
    nll = -log_probas.detach().double().gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, S)
    mask = mask.double()
    return ((nll * mask).sum(1) / mask.sum(1)).mean()


def token_mean_nll_f64(log_probas, targets, mask):
    """The common mistake: one mean over all real tokens of the batch."""
    nll = -log_probas.detach().double().gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = mask.double()
    return (nll * mask).sum() / mask.sum()


# -- properties -----------------------------------------------------------------------------

def assert_prefix_unchanged(fn, x, t, what, perturb):
    """Changing positions > t of x must leave outputs at positions <= t unchanged (causality)."""
    __tracebackhide__ = True
    before = fn(x)
    changed = x.clone()
    changed[:, t + 1:] = perturb(changed[:, t + 1:])
    after = fn(changed)
    error = (after[:, : t + 1] - before[:, : t + 1]).abs().max().item()
    if error > 1e-5:
        raise AssertionError(
            f"{what} is not causal: changing the inputs after position {t} changed the outputs "
            f"at positions <= {t} (max abs change {error:.3g}). Position t may only use "
            f"positions <= t."
        )
    return before, after


class LinearCalls(TorchFunctionMode):
    """Records (input, weight, output) of every torch.nn.functional.linear call (nn.Linear included)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is F.linear:
            weight = args[1] if len(args) > 1 else (kwargs or {}).get("weight")
            self.calls.append((args[0].detach().clone(), weight, out.detach().clone()))
        return out


def qkv_readings(projected, num_heads):
    """Every accepted way to read Q, K, V out of the concatenated projections (B, S, 3d).

    Three separate projections concatenated in call order, or one fused projection: its
    output read as (3, d) blocks or as (H, 3, hd) per-head blocks, in any role order.
    """
    batch_size, sequence_length, width = projected.shape
    d = width // 3
    blocks = projected.reshape(batch_size, sequence_length, 3, d)  # (B, S, 3, d)
    per_head = projected.reshape(batch_size, sequence_length, num_heads, 3, d // num_heads)
    layouts = {
        "blocks": [blocks[:, :, i] for i in range(3)],
        "per-head": [per_head[:, :, :, i].reshape(batch_size, sequence_length, d) for i in range(3)],
    }
    for layout, pieces in layouts.items():
        for order in permutations(range(3)):
            yield layout, order, [pieces[i] for i in order]
