"""Problem 2, questions 2-5 (gpt1_solution.py): MultiHeadedAttention.

split_heads/merge_heads follow the standard convention split_heads(x)[b, h, s, d] ==
x[b, s, h * dim + d] (the handout's index example is a typo, see course-apis.md).
nn.MultiheadAttention, multi_head_attention_forward and fused scaled-dot-product attention
are disabled while these tests run (the rubric's rule). The projections' layout is the
student's choice, so forward is checked through the nn.Linear / F.linear calls it makes.
"""
import torch
from mila_checks import (
    LinearCalls,
    assert_close,
    assert_prefix_unchanged,
    assert_shape,
    attention_f64,
    causal_attention_weights_f64,
    merge_heads_f64,
    qkv_readings,
    split_heads_f64,
)

SPLIT_HINT = (
    "split_heads reshapes (B, S, H * dim) to (B, S, H, dim) and swaps the S and H axes: "
    "split_heads(x)[b, h, s, d] == x[b, s, h * dim + d]; merge_heads undoes exactly that."
)
WEIGHTS_HINT = (
    "weights = softmax(Q K^T / sqrt(head_size)) over the last axis (the keys), with position "
    "t attending only to positions <= t (x * s - 1e4 * (1 - s) before the softmax)."
)


def _attention(sub, head_size, num_heads, sequence_length):
    return sub.gpt1.MultiHeadedAttention(head_size, num_heads, sequence_length)


# -- question 2: split_heads / merge_heads -------------------------------------------------

def test_split_heads_index_relation(sub, snapshot):
    x = torch.randn(2, 5, 3 * 7)  # dim = 7, unlike head_size and num_heads
    attention = _attention(sub, 4, 3, 5)
    y = attention.split_heads(x)
    assert_shape(y, (2, 3, 5, 7), "split_heads output for an input of shape (2, 5, 21) with 3 heads")
    assert_close(y, split_heads_f64(x, 3), "split_heads output", rtol=0, atol=0, hint=SPLIT_HINT)
    snapshot.check("split", y, rtol=0, atol=0, hint=SPLIT_HINT)


def test_merge_heads_index_relation(sub, snapshot):
    y = torch.randn(2, 3, 5, 7)
    attention = _attention(sub, 4, 3, 5)
    x = attention.merge_heads(y)
    assert_shape(x, (2, 5, 21), "merge_heads output for an input of shape (2, 3, 5, 7)")
    assert_close(x, merge_heads_f64(y), "merge_heads output", rtol=0, atol=0, hint=SPLIT_HINT)
    snapshot.check("merged", x, rtol=0, atol=0, hint=SPLIT_HINT)


def test_split_merge_roundtrip(sub):
    for head_size, num_heads, dim in [(4, 3, 7), (2, 4, 2), (5, 1, 5)]:
        x = torch.randn(3, 6, num_heads * dim)
        y = torch.randn(3, num_heads, 6, dim)
        attention = _attention(sub, head_size, num_heads, 6)
        hint = "merge_heads must be the exact inverse of split_heads. " + SPLIT_HINT
        where = f"(num_heads={num_heads}, dim={dim})"
        assert_close(attention.merge_heads(attention.split_heads(x)), x, f"merge_heads(split_heads(x)) {where}", rtol=0, atol=0, hint=hint)
        assert_close(attention.split_heads(attention.merge_heads(y)), y, f"split_heads(merge_heads(y)) {where}", rtol=0, atol=0, hint=hint)


# -- question 3: get_attention_weights -----------------------------------------------------

def test_attention_weights_values(sub, snapshot):
    queries, keys = 1.5 * torch.randn(2, 2, 6, 8), 1.5 * torch.randn(2, 2, 6, 8)
    attention = _attention(sub, 8, 2, 6)
    weights = attention.get_attention_weights(queries, keys)
    assert_shape(weights, (2, 2, 6, 6), "attention weights")
    assert_close(weights, causal_attention_weights_f64(queries, keys), "attention weights", hint=WEIGHTS_HINT)
    snapshot.check("weights", weights, hint=WEIGHTS_HINT)


def test_attention_weights_causal_rows_sum_to_one(sub):
    queries, keys = 4.0 * torch.randn(3, 4, 7, 5), 4.0 * torch.randn(3, 4, 7, 5)
    attention = _attention(sub, 5, 4, 7)
    weights = attention.get_attention_weights(queries, keys)
    assert_shape(weights, (3, 4, 7, 7), "attention weights")
    future = torch.ones(7, 7, dtype=torch.bool).triu(diagonal=1)
    leak = weights[..., future].abs().max().item()
    if leak > 1e-6:
        raise AssertionError(
            f"attention weights are not causal: weights[..., t, tau] for tau > t reach {leak:.3g}, "
            f"should be 0 (position t may only attend to positions <= t). Is the mask transposed or missing?"
        )
    rows = weights.double().sum(dim=-1)
    if (rows - 1).abs().max() > 1e-5 or (weights < 0).any():
        raise AssertionError(
            "each row of the attention weights (fixed query position, all key positions) must be "
            f"a probability distribution summing to 1; found sums off by {(rows - 1).abs().max().item():.3g}. "
            "Take the softmax over the last axis."
        )
    first = weights[..., 0, 0]
    if (first - 1).abs().max() > 1e-6:
        raise AssertionError("the first position can only attend to itself: weights[..., 0, 0] must be 1.")


def test_attention_weights_scaling(sub):
    # head_size differs from num_heads * head_size, so sqrt(head_size) is the only scale that fits.
    queries, keys = torch.randn(2, 3, 5, 16), torch.randn(2, 3, 5, 16)
    attention = _attention(sub, 16, 3, 5)
    weights = attention.get_attention_weights(queries, keys)
    assert_close(
        weights, causal_attention_weights_f64(queries, keys), "attention weights (head_size=16, num_heads=3)",
        hint="Scale the dot products by 1 / sqrt(head_size), the size of one head, not of all heads. " + WEIGHTS_HINT,
    )


# -- question 4: apply_attention -----------------------------------------------------------

def test_apply_attention_values(sub, snapshot):
    queries, keys, values = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    attention = _attention(sub, 4, 3, 5)
    outputs = attention.apply_attention(queries, keys, values)
    assert_shape(outputs, (2, 5, 12), "apply_attention output")
    hint = "apply_attention = merge_heads(get_attention_weights(Q, K) @ V). " + WEIGHTS_HINT
    assert_close(outputs, attention_f64(queries, keys, values), "apply_attention output", hint=hint)
    snapshot.check("outputs", outputs, hint=hint)


def test_apply_attention_is_causal(sub):
    queries, keys, values = torch.randn(2, 2, 6, 3), torch.randn(2, 2, 6, 3), torch.randn(2, 2, 6, 3)
    attention = _attention(sub, 3, 2, 6)

    def apply(keys_and_values):
        # keys_and_values: (B, S, 2, H, hd), so positions are axis 1 as the helper expects
        k = keys_and_values[:, :, 0].transpose(1, 2)  # (B, H, S, hd)
        v = keys_and_values[:, :, 1].transpose(1, 2)  # (B, H, S, hd)
        return attention.apply_attention(queries, k, v)

    stacked = torch.stack([keys.transpose(1, 2), values.transpose(1, 2)], dim=2)  # (B, S, 2, H, hd)
    assert_prefix_unchanged(apply, stacked, 2, "apply_attention", perturb=lambda part: part + 3.0)


# -- question 5: forward -------------------------------------------------------------------

def test_mha_forward_values(sub):
    head_size, num_heads, sequence_length = 4, 3, 5
    hidden_states = torch.randn(2, sequence_length, num_heads * head_size)
    attention = _attention(sub, head_size, num_heads, sequence_length)
    with torch.no_grad():
        for parameter in attention.parameters():  # larger than the default init: sharper attention
            parameter.copy_(0.5 * torch.randn_like(parameter))
        with LinearCalls() as recorder:
            outputs = attention(hidden_states)
    assert_shape(outputs, hidden_states.shape, "MultiHeadedAttention output")
    calls = recorder.calls
    if not calls:
        _check_forward_without_linear_calls(attention, hidden_states, outputs)
        return
    reads_input = [(w, out) for inp, w, out in calls if inp.shape == hidden_states.shape and torch.equal(inp, hidden_states)]
    projections = [out for _, out in reads_input]
    output_calls = [(inp, out) for inp, _, out in calls if out.shape == outputs.shape and torch.equal(out, outputs)]
    width = num_heads * head_size
    if len({id(w) for w, _ in reads_input}) != len(reads_input):
        raise AssertionError(
            "MultiHeadedAttention.forward applies the same projection of hidden_states twice: the "
            "queries, keys and values each need their own weights (W_Q, W_K, W_V)."
        )
    if sum(p.shape[-1] for p in projections) != 3 * width or len(output_calls) != 1:
        raise AssertionError(
            "MultiHeadedAttention.forward should project hidden_states into queries, keys and values "
            f"(3 x {width} features in all, with nn.Linear layers) and end with an output projection "
            f"nn.Linear({width}, {width}); found projections of hidden_states with "
            f"{[p.shape[-1] for p in projections]} features and {len(output_calls)} final projection(s)."
        )
    attended = output_calls[0][0]  # what the output projection received, (B, S, H * hd)
    projected = torch.cat(projections, dim=-1)  # (B, S, 3 * H * hd)
    best = None
    for _, _, (q, k, v) in qkv_readings(projected, num_heads):
        expected = attention_f64(split_heads_f64(q, num_heads), split_heads_f64(k, num_heads), split_heads_f64(v, num_heads))
        error = (attended.double() - expected).abs().max().item()
        best = error if best is None else min(best, error)
    if best > 1e-4:
        raise AssertionError(
            "MultiHeadedAttention.forward: the input of the output projection is not the causal "
            "attention of the query, key and value projections (max abs error "
            f"{best:.3g} for the closest reading of your projections). It should be "
            "apply_attention(split_heads(Q), split_heads(K), split_heads(V)) with "
            "Q, K, V = X W + b."
        )


def _check_forward_without_linear_calls(attention, hidden_states, outputs):
    """Projections written with raw parameters: check what holds for any layout."""
    single = hidden_states[:, :1]
    other = torch.randn_like(single)
    with torch.no_grad():
        # With one position the attention weight is 1: forward is affine in its input.
        mixed = attention(0.25 * single + 0.75 * other)
        expected = 0.25 * attention(single) + 0.75 * attention(other)
    assert_close(mixed, expected.double(), "forward on one-position sequences (must be affine)", rtol=1e-3, atol=1e-4)
    if outputs[:, 1:].std() == 0:
        raise AssertionError("MultiHeadedAttention.forward returns a constant.")


def test_mha_parameter_count(sub):
    for head_size, num_heads in [(4, 3), (8, 2), (5, 1)]:
        attention = _attention(sub, head_size, num_heads, 6)
        d = head_size * num_heads
        count = sum(p.numel() for p in attention.parameters() if p.requires_grad)
        if count != 4 * (d * d + d):
            raise AssertionError(
                f"MultiHeadedAttention(head_size={head_size}, num_heads={num_heads}) has {count} learnable "
                f"parameters; the query, key, value and output projections ({d} -> {d}, each with a "
                f"bias) have 4 * ({d}^2 + {d}) = {4 * (d * d + d)}."
            )


def test_mha_forward_causal(sub):
    hidden_states = torch.randn(2, 6, 12)
    attention = _attention(sub, 4, 3, 6)
    with torch.no_grad():
        before, after = assert_prefix_unchanged(attention, hidden_states, 2, "MultiHeadedAttention.forward",
                                                perturb=lambda part: part + torch.randn_like(part))
        if (after[:, 3:] - before[:, 3:]).abs().max() < 1e-6:
            raise AssertionError("MultiHeadedAttention.forward: outputs at a position do not depend on its own input.")
        changed = hidden_states.clone()
        changed[:, 0] += 1.0
        if (attention(changed)[:, 4] - before[:, 4]).abs().max() < 1e-6:
            raise AssertionError(
                "MultiHeadedAttention.forward: the output at position 4 does not depend on position 0; "
                "each position should attend to all earlier positions."
            )
