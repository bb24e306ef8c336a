"""IFT6135 A2's suite: every point decided by the grading parent, as strict as the handout.

- (alternatives and starter-style templates are graded for every assignment in test_assignments.py);
- the suite's own rules (test_suites/mila_ift6135_a2/judges.py) accept what they should and
  refuse degenerate outputs, with numpy only;
- the reference follows the handout's formulas (float64), so the recorded snapshots do too.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.assignment import load_assignment
from grader.judges import Evidence, load_rulebook

ID = "mila_ift6135_a2"
ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "test_suites" / ID


@pytest.fixture(scope="module")
def assignment():
    return load_assignment(ID)


def test_short_inputs_to_get_embeddings_are_not_graded(assignment):
    """The handout embeds full-length sequences only; shorter ones are reported for 0 points."""
    points = {t.test_id: t.points for t in assignment.tests}
    assert points["hidden/test_gpt1.py::test_get_embeddings_values"] == 1
    assert points["hidden/test_gpt1.py::test_get_embeddings_shorter_sequences"] == 0


# -- the suite's rules, applied as the parent applies them ------------------------------------------


@pytest.fixture(scope="module")
def rules():
    return load_rulebook(SUITE)


def _judge(rules, rule, value, expected=None, seen=None, **params):
    ev = Evidence(
        key="value", value=value, params=params, expected=value if expected is None else expected, seen=seen or {}
    )
    return rules.evaluate(rule, ev)


def test_judges_load_without_torch():
    code = (
        "import sys; from pathlib import Path; from grader.judges import load_rulebook; "
        f"book = load_rulebook(Path({str(SUITE)!r})); "
        "assert 'torch' not in sys.modules; assert 'mha_forward' in book"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_generated_values_are_the_same_on_both_sides():
    """The test process and the parent load generated_weights.py separately: same values."""
    from grader.judges import load_rulebook as _  # noqa: F401 - the parent's side is judges.py

    spec = importlib.util.spec_from_file_location("_gw", SUITE / "generated_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    a = module.generated_values((12, 36), 3, 7, 0.8)
    assert a.dtype == np.float32 and a.shape == (12, 36)
    assert np.array_equal(a, module.generated_values((12, 36), 3, 7, 0.8))
    assert not np.array_equal(a, module.generated_values((12, 36), 4, 7, 0.8))
    assert np.abs(a).max() <= 0.8 and abs(float(a.mean())) < 0.1 and float(a.std()) > 0.3


def _causal_softmax(scores):
    size = scores.shape[-1]
    scores = np.where(np.tril(np.ones((size, size), dtype=bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True)


def test_causal_weights_accepts_any_positive_scale_and_refuses_degenerate_weights(rules):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 3, 6, 6)) * 4
    reference = _causal_softmax(scores).astype(np.float32)
    assert _judge(rules, "causal_weights", reference) == []
    assert _judge(rules, "causal_weights", _causal_softmax(scores / 3).astype(np.float32), reference) == []
    eye = np.broadcast_to(np.eye(6, dtype=np.float32), reference.shape).copy()
    assert "largest" in _judge(rules, "causal_weights", eye, reference)[0]
    uniform = np.tril(np.ones((6, 6))) / np.arange(1, 7)[:, None]
    assert _judge(rules, "causal_weights", np.broadcast_to(uniform, reference.shape).astype(np.float32), reference)
    leaky = reference.copy()
    leaky[..., 0, 1] = 0.5
    assert "not causal" in _judge(rules, "causal_weights", leaky, reference)[0]
    assert _judge(rules, "causal_weights", np.zeros_like(reference), reference)
    assert "shape" in _judge(rules, "causal_weights", reference[..., :5], reference)[0]


def test_rearrangement_and_log_probabilities(rules):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert _judge(rules, "rearrangement", x[:, ::-1].copy(), x) == []
    assert _judge(rules, "rearrangement", np.zeros_like(x), x)
    logits = np.random.default_rng(1).normal(size=(2, 3, 5))
    log_probas = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert _judge(rules, "log_probabilities", log_probas) == []
    assert "logits" in _judge(rules, "log_probabilities", logits, log_probas)[0]


def test_loss_value_names_the_common_mistakes(rules):
    mistakes = {"the token mean": 2.5, "over padding too": 7.0}
    expected = np.array([3.0], dtype=np.float32)
    assert _judge(rules, "loss_value", expected, mistakes=mistakes) == []
    assert _judge(rules, "loss_value", np.array([2.5], np.float32), expected, mistakes=mistakes) == [
        "the loss is the token mean"
    ]
    assert _judge(rules, "loss_value", np.array([4.0], np.float32), expected, mistakes=mistakes) == [
        "the loss differs from the expected value"
    ]
    assert _judge(rules, "loss_value", None, expected)  # `pass`: nothing returned


def _generated(shapes, seed, scale):
    spec = importlib.util.spec_from_file_location("_gw2", SUITE / "generated_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [module.generated_values(s, i, seed, scale).astype(np.float64) for i, s in enumerate(shapes)]


def _mha(x, q, k, v, w_out, b_out, heads):
    def split(t):
        return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(0, 2, 1, 3)

    q, k, v = split(q), split(k), split(v)
    weights = _causal_softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]))
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(x.shape)
    return out @ w_out.T + b_out


@pytest.mark.parametrize("layout", ["separate", "separate_reordered", "fused_blocks", "fused_per_head"])
def test_mha_forward_reads_every_accepted_layout(rules, layout):
    heads, width, seed, scale = 3, 12, 5, 0.8
    x = np.random.default_rng(2).normal(size=(2, 5, width)).astype(np.float32)
    if layout.startswith("separate"):
        shapes = [[width, width], [width]] * 4
        w = _generated(shapes, seed, scale)
        weights, biases = w[0::2], w[1::2]
        proj = [x @ wi.T + bi for wi, bi in zip(weights, biases)]
        # registration order: (q, k, v, out) or (out, v, q, k)
        q, k, v, o = (0, 1, 2, 3) if layout == "separate" else (2, 3, 1, 0)
        out = _mha(x, proj[q], proj[k], proj[v], weights[o], biases[o], heads)
    else:
        shapes = [[3 * width, width], [3 * width], [width, width], [width]]
        w_qkv, b_qkv, w_out, b_out = _generated(shapes, seed, scale)
        packed = x @ w_qkv.T + b_qkv
        if layout == "fused_blocks":
            q, k, v = np.split(packed, 3, axis=-1)
        else:
            per_head = packed.reshape(2, 5, heads, 3, width // heads)
            q, k, v = (per_head[:, :, :, i].reshape(2, 5, width) for i in range(3))
        out = _mha(x, q, k, v, w_out, b_out, heads)
    out = out.astype(np.float32)
    seen = {"x": x, "shapes": shapes}
    params = {"inputs": "x", "shapes": "shapes", "num_heads": heads, "seed": seed, "scale": scale}
    assert _judge(rules, "mha_forward", out, seen=seen, **params) == []
    assert _judge(rules, "mha_forward", out + 0.01, out, seen=seen, **params)
    assert _judge(rules, "mha_forward", np.zeros_like(out), out, seen=seen, **params)
    # only position 0 compared (the causality test's anchor): later positions may differ
    later = out.copy()
    later[:, 1:] += 1.0
    assert _judge(rules, "mha_forward", later, out, seen=seen, positions=1, **params) == []
    assert "cannot read" in _judge(rules, "mha_forward", out, seen={**seen, "shapes": shapes[:2]}, **params)[0]


# -- the reference follows the handout's formulas (so do the snapshots recorded from it) ------------


@pytest.fixture(scope="module")
def reference_gpt1():
    """The reference's gpt1_solution.py, imported without leaving `utils` in sys.modules."""
    folder = load_assignment(ID, ROOT).reference_dir
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("_mila_reference_gpt1", folder / "gpt1_solution.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
        for name in set(sys.modules) - before:
            if name == "utils" or name.startswith("utils."):
                del sys.modules[name]
    return module


def test_reference_layer_norm_is_the_handout_formula(reference_gpt1):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 16) * torch.tensor([1e-3, 1e-2, 1.0, 3.0]).reshape(1, 4, 1)
    layer_norm = reference_gpt1.LayerNorm(16)
    with torch.no_grad():
        layer_norm.weight.copy_(1 + torch.randn(16))
        layer_norm.bias.copy_(torch.randn(16))
        y = layer_norm(x)
    xd = x.double()
    mean = xd.mean(-1, keepdim=True)
    variance = ((xd - mean) ** 2).mean(-1, keepdim=True)  # biased
    expected = (xd - mean) / torch.sqrt(variance + 1e-5) * layer_norm.weight.double() + layer_norm.bias.double()
    torch.testing.assert_close(y.double(), expected, rtol=1e-4, atol=1e-5)


def test_reference_attention_is_the_handout_formula(reference_gpt1):
    torch.manual_seed(1)
    heads, head_size, length = 3, 4, 6
    attention = reference_gpt1.MultiHeadedAttention(head_size, heads, length)
    q, k, v = (torch.randn(2, heads, length, head_size) for _ in range(3))
    weights = attention.get_attention_weights(q, k)
    expected = torch.from_numpy(
        _causal_softmax((q.double() @ k.double().transpose(-2, -1)).numpy() / math.sqrt(head_size))
    )
    torch.testing.assert_close(weights.double(), expected, rtol=1e-4, atol=1e-6)
    merged = (expected @ v.double()).transpose(1, 2).reshape(2, length, heads * head_size)
    torch.testing.assert_close(attention.apply_attention(q, k, v).double(), merged, rtol=1e-4, atol=1e-5)
    x = torch.randn(2, length, heads * 7)
    split = attention.split_heads(x)
    for b, h, s, d in [(0, 1, 2, 3), (1, 2, 5, 6), (0, 0, 0, 0)]:
        assert split[b, h, s, d] == x[b, s, h * 7 + d]  # course-apis.md: the standard convention
    assert torch.equal(attention.merge_heads(split), x)


def test_reference_loss_is_the_per_sequence_mean(reference_gpt1):
    torch.manual_seed(2)
    model = reference_gpt1.MiniGPT1(20, 12, 6, 3, 1)
    log_probas = torch.log_softmax(torch.randn(3, 6, 20), -1)
    targets = torch.randint(1, 20, (3, 6))
    mask = (torch.arange(6)[None] < torch.tensor([6, 2, 4])[:, None]).float()
    nll = -log_probas.double().gather(-1, targets[..., None])[..., 0]
    expected = ((nll * mask).sum(1) / mask.sum(1)).mean()
    torch.testing.assert_close(model.loss(log_probas, targets, mask).double(), expected)
