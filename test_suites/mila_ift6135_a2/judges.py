"""IFT6135 A2's own rules, applied by the grading parent to what the hidden tests send (numpy only).

Each rule judges a property of a submission's output; the tests pair every property with a value
anchor (a recorded value only the right computation gives), so that a degenerate output cannot
satisfy it. Messages never contain a recorded (expected) value.
"""
import dataclasses
import importlib.util
import math
from itertools import permutations
from pathlib import Path

import numpy as np

from grader.judges import Evidence, as_array, prefix_unchanged, rule, same_as


def _load_generated_weights():
    path = Path(__file__).with_name("generated_weights.py")
    spec = importlib.util.spec_from_file_location("_mila_generated_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generated_values = _load_generated_weights().generated_values


def _against_earlier(ev: Evidence) -> Evidence:
    """``ev`` with the parameter ``earlier`` renamed ``key``, for the generic rules that compare
    with an earlier value (``Snapshot.judge`` takes its own first argument as ``key``)."""
    return dataclasses.replace(ev, params={**ev.params, "key": ev.param("earlier")})


@rule("same_as_earlier")
def same_as_earlier(ev: Evidence) -> list[str]:
    """grader.judges' ``same_as`` against the earlier value named by ``earlier``."""
    return same_as(_against_earlier(ev))


@rule("prefix_unchanged_from")
def prefix_unchanged_from(ev: Evidence) -> list[str]:
    """grader.judges' ``prefix_unchanged`` (causality) against the earlier value ``earlier``."""
    return prefix_unchanged(_against_earlier(ev))


def _shaped_like_expected(ev: Evidence, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(value, expected) as float64 arrays; ValueError if the value is not shaped as expected."""
    expected = as_array(ev.expected, f"the recorded `{ev.key}`")
    if not isinstance(ev.value, np.ndarray):
        raise TypeError(f"{what} should be a tensor of shape {tuple(expected.shape)}, "
                         f"got {type(ev.value).__name__}")
    value = ev.value
    if value.shape != expected.shape:
        raise ValueError(f"{what} has shape {tuple(value.shape)}, expected {tuple(expected.shape)}")
    if value.dtype.kind != "f":
        raise ValueError(f"{what} has dtype {value.dtype}, expected a floating-point tensor")
    return value.astype(np.float64), expected.astype(np.float64)


@rule("log_probabilities")
def log_probabilities(ev: Evidence) -> list[str]:
    """Every row over the last axis (the vocabulary) log-sum-exps to 0: log-probabilities."""
    what = ev.param("what", f"`{ev.key}`")
    value, _ = _shaped_like_expected(ev, what)
    if not np.isfinite(value).all():
        return [f"{what} contains NaN or inf"]
    top = value.max(axis=-1, keepdims=True)
    total = (top + np.log(np.exp(value - top).sum(axis=-1, keepdims=True)))[..., 0]
    error = float(np.abs(total).max())
    if error > float(ev.param("atol", 1e-4)):
        return [(f"{what} must be log-probabilities (log_softmax over the vocabulary), not logits or "
                f"probabilities: logsumexp over the vocabulary is off from 0 by up to {error:.3g}")]
    return []


@rule("loss_value")
def loss_value(ev: Evidence) -> list[str]:
    """A scalar loss close to the recorded one; known mistakes (``mistakes``: label -> the value
    that mistake gives on the same inputs, recorded at record time) are named."""
    what = ev.param("what", "the loss")
    value, expected = _shaped_like_expected(ev, what)
    if value.size != 1:
        raise ValueError(f"{what} should be a scalar tensor, got shape {tuple(value.shape)}")
    if not np.isfinite(value).all():
        return [f"{what} is NaN or infinite"]
    rtol, atol = float(ev.param("rtol", 1e-4)), float(ev.param("atol", 1e-5))
    # (a 0-d tensor reaches the parent as an array of one entry)
    value, expected = float(value.reshape(-1)[0]), float(expected.reshape(-1)[0])
    if abs(value - expected) <= atol + rtol * abs(expected):
        return []
    for label, wrong in (ev.param("mistakes", {}) or {}).items():
        if abs(value - float(wrong)) <= atol + rtol * abs(float(wrong)):
            return [f"{what} is {label}"]
    return [f"{what} differs from the expected value"]


@rule("causal_weights")
def causal_weights(ev: Evidence) -> list[str]:
    """Causal attention weights: 0 on future keys, rows that are probability distributions, the
    first position attending to itself only; anchored by the key each query attends to most,
    which any positive scaling of Q K^T keeps (the recorded weights decide it)."""
    weights, expected = _shaped_like_expected(ev, "the attention weights")
    if not np.isfinite(weights).all():
        return ["the attention weights contain NaN or inf"]
    size = weights.shape[-1]
    future = np.triu(np.ones((size, size), dtype=bool), k=1)
    leak = float(np.abs(weights[..., future]).max()) if future.any() else 0.0
    if leak > 1e-6:
        return [(f"the attention weights are not causal: weights[..., t, tau] for tau > t reach {leak:.3g}, "
                "should be 0 (position t may only attend to positions <= t). Is the mask transposed or missing?")]
    rows = weights.sum(axis=-1)
    if (weights < -1e-7).any() or float(np.abs(rows - 1).max()) > 1e-5:
        return [("each row of the attention weights (one query position, all key positions) must be a "
                f"probability distribution; found row sums off from 1 by {float(np.abs(rows - 1).max()):.3g}. "
                "Take the softmax over the last axis.")]
    if float(np.abs(weights[..., 0, 0] - 1).max()) > 1e-6:
        return ["the first position can only attend to itself: weights[..., 0, 0] must be 1"]
    allowed = ~future
    mine = np.where(allowed, weights, -np.inf).argmax(axis=-1)[..., 1:]
    theirs = np.where(allowed, expected, -np.inf).argmax(axis=-1)[..., 1:]
    if (mine != theirs).any():
        # (how many positions differ is not said: a hidden test discloses no error magnitude)
        return [("the attention weights do not follow the dot products of the queries and keys: for "
                 "some query position the key with the largest weight is not the one with the largest Q.K")]
    return []


@rule("rearrangement")
def rearrangement(ev: Evidence) -> list[str]:
    """The recorded shape, and exactly the recorded entries in some order: a reshape/transpose."""
    what = ev.param("what", f"`{ev.key}`")
    value, expected = _shaped_like_expected(ev, what)
    if not np.array_equal(np.sort(value, axis=None), np.sort(expected, axis=None)):
        return [f"{what} must only reshape and transpose its input: its entries are not the input's entries"]
    return []


@rule("later_positions_change")
def later_positions_change(ev: Evidence) -> list[str]:
    """Changing the input at position 0 changed the outputs at some position >= ``start`` (the
    earlier value ``earlier`` is the output before the change): later positions use earlier ones."""
    other = ev.param("earlier")
    a = as_array(ev.value, f"`{ev.key}`", dtype=np.float64)
    b = as_array(ev.earlier(other), f"`{other}`", dtype=np.float64)
    if a.shape != b.shape:
        return [f"`{ev.key}` has shape {tuple(a.shape)} but `{other}` has shape {tuple(b.shape)}"]
    start = int(ev.param("start", 1))
    if not np.isfinite(a).all() or float(np.abs(a[:, start:] - b[:, start:]).max()) <= float(ev.param("atol", 1e-6)):
        return [(f"{ev.param('what', 'the output')}: changing position 0 changed no output at later positions; "
                "each position should attend to all earlier positions")]
    return []


@rule("parameter_shapes")
def parameter_shapes(ev: Evidence) -> list[str]:
    """A list of parameter shapes (lists of positive integers): the layout `mha_forward` reads."""
    shapes = ev.value
    if not isinstance(shapes, list) or not all(
            isinstance(s, list) and s and all(isinstance(d, int) and d > 0 for d in s) for s in shapes):
        raise ValueError("the parameter shapes are not a list of shapes")
    if not shapes:
        return [("MultiHeadedAttention has no trainable parameters: add the query, key, value and output "
                "projections in __init__")]
    return []


# -- MultiHeadedAttention.forward, whatever the layout of its projections ------------------------

def _split(x: np.ndarray, heads: int) -> np.ndarray:
    batch, length, width = x.shape
    return x.reshape(batch, length, heads, width // heads).transpose(0, 2, 1, 3)


def _attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int) -> np.ndarray:
    q, k, v = _split(q, heads), _split(k, heads), _split(v, heads)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    length = scores.shape[-1]
    scores = np.where(np.tril(np.ones((length, length), dtype=bool)), scores, -np.inf)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    out = (scores / scores.sum(axis=-1, keepdims=True)) @ v  # (B, H, S, hd)
    batch, _, length, _ = out.shape
    return out.transpose(0, 2, 1, 3).reshape(batch, length, -1)


def _affine(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, linear: bool) -> np.ndarray:
    """nn.Linear (weight (out, in): x W^T + b) or a raw matrix (weight (in, out): x W + b)."""
    return x @ (weight.T if linear else weight) + bias


def _readings(weights, biases, x, width, heads):
    """(name, Q, K, V, output weight, output bias, linear) for every accepted layout."""
    if len(weights) == 4 and all(w.shape == (width, width) for w in weights) \
            and all(b.shape == (width,) for b in biases):
        for linear in (True, False):
            projections = [_affine(x, w, b, linear) for w, b in zip(weights, biases)]
            for out in range(4):
                rest = [i for i in range(4) if i != out]
                for q, k, v in permutations(rest):
                    yield projections[q], projections[k], projections[v], weights[out], biases[out], linear
    if len(weights) == 2:
        fused = [i for i, w in enumerate(weights) if sorted(w.shape) == sorted((3 * width, width))]
        square = [i for i, w in enumerate(weights) if w.shape == (width, width)]
        fused_b = [b for b in biases if b.shape == (3 * width,)]
        square_b = [b for b in biases if b.shape == (width,)]
        if len(fused) == 1 and len(square) == 1 and len(fused_b) == 1 and len(square_b) == 1:
            w_qkv, w_out = weights[fused[0]], weights[square[0]]
            linear = w_qkv.shape == (3 * width, width)
            packed = _affine(x, w_qkv, fused_b[0], linear)  # (B, S, 3 d)
            batch, length, _ = packed.shape
            blocks = packed.reshape(batch, length, 3, width)
            per_head = packed.reshape(batch, length, heads, 3, width // heads)
            pieces = {"blocks": [blocks[:, :, i] for i in range(3)],
                      "per-head": [per_head[:, :, :, i].reshape(batch, length, width) for i in range(3)]}
            for parts in pieces.values():
                for q, k, v in permutations(range(3)):
                    yield parts[q], parts[k], parts[v], w_out, square_b[0], linear


@rule("mha_forward")
def mha_forward(ev: Evidence) -> list[str]:
    """The output of MultiHeadedAttention.forward whose trainable parameters (shapes sent under
    ``shapes``, values rebuilt with ``generated_values(shape, index, seed, scale)``) were written
    by the test: out_proj(apply_attention(split(Q), split(K), split(V))) for the input sent under
    ``inputs`` (value-checked), with Q, K, V, out separate projections (any order, nn.Linear or raw
    matrices) or one fused QKV projection. ``positions`` limits the comparison to the first ones."""
    outputs, _ = _shaped_like_expected(ev, "the MultiHeadedAttention output")
    x = as_array(ev.earlier(ev.param("inputs")), "the input", dtype=np.float64, ndim=3)
    shapes = ev.earlier(ev.param("shapes"))
    heads, width = int(ev.param("num_heads")), x.shape[-1]
    seed, scale = int(ev.param("seed")), float(ev.param("scale"))
    if not np.isfinite(outputs).all():
        return ["the MultiHeadedAttention output contains NaN or inf"]
    values = [generated_values(s, i, seed, scale).astype(np.float64) for i, s in enumerate(shapes)]
    weights = [v for v in values if v.ndim == 2]
    biases = [v for v in values if v.ndim == 1]
    if len(weights) + len(biases) != len(values) or len(weights) != len(biases):
        weights = []
    positions = ev.param("positions", None)
    upto = outputs.shape[1] if positions is None else int(positions)
    rtol, atol = float(ev.param("rtol", 2e-4)), float(ev.param("atol", 2e-5))
    found = False
    for q, k, v, w_out, b_out, linear in _readings(weights, biases, x, width, heads):
        found = True
        expected = _affine(_attend(q, k, v, heads), w_out, b_out, linear)
        error = np.abs(outputs[:, :upto] - expected[:, :upto])
        if (error <= atol + rtol * np.abs(expected[:, :upto])).all():
            return []
    if not found:
        listed = ", ".join("x".join(str(d) for d in s) for s in shapes[:12])
        return [(f"cannot read the query, key, value and output projections from the trainable parameters "
                f"of MultiHeadedAttention (shapes {listed}): expected four {width}x{width} weights with "
                f"{width}-sized biases, or one fused {3 * width}x{width} query/key/value projection with its "
                f"bias and a {width}x{width} output projection with its bias")]
    return [("MultiHeadedAttention.forward does not compute "
            "out_proj(apply_attention(split_heads(Q), split_heads(K), split_heads(V))) with "
            "Q, K, V = X W + b for its own projections, read in any order")]
