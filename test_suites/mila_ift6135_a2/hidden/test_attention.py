"""Problem 2, questions 2-5 (gpt1_solution.py): MultiHeadedAttention.

split_heads/merge_heads follow the standard convention split_heads(x)[b, h, s, d] ==
x[b, s, h * dim + d] (the handout's index example is a typo, see course-apis.md).
nn.MultiheadAttention, multi_head_attention_forward and fused scaled-dot-product attention
are disabled while these tests run (the rubric's rule).

Every point is decided by the grading parent: values compared with the reference's, and
properties (causality, rows that are distributions, a round trip) judged by the rules of
../judges.py next to a value anchor. The projections' layout is the student's choice, so
forward is run with parameters the test writes (`set_generated_parameters`), which the parent
rebuilds from their shapes to recompute the attention for every accepted layout.
"""
import torch
from mila_checks import assert_shape, set_generated_parameters

SPLIT_HINT = (
    "split_heads reshapes (B, S, H * dim) to (B, S, H, dim) and swaps the S and H axes: "
    "split_heads(x)[b, h, s, d] == x[b, s, h * dim + d]; merge_heads undoes exactly that."
)
WEIGHTS_HINT = (
    "weights = softmax(Q K^T / sqrt(head_size)) over the last axis (the keys), with position "
    "t attending only to positions <= t (x * s - 1e4 * (1 - s) before the softmax)."
)
APPLY_HINT = "apply_attention = merge_heads(get_attention_weights(Q, K) @ V). " + WEIGHTS_HINT
FORWARD_HINT = (
    "forward: Q, K, V = X W + b (three projections, or one fused one), "
    "apply_attention(split_heads(Q), split_heads(K), split_heads(V)), then the output projection."
)
PARAMETER_SCALE = 0.8


def _attention(sub, head_size, num_heads, sequence_length):
    # eval(): a dropout the student may have added must not make the outputs random
    return sub.gpt1.MultiHeadedAttention(head_size, num_heads, sequence_length).eval()


# -- question 2: split_heads / merge_heads -------------------------------------------------

def test_split_heads_index_relation(sub, snapshot):
    x = torch.randn(2, 5, 3 * 7)  # dim = 7, unlike head_size and num_heads
    attention = _attention(sub, 4, 3, 5)
    y = attention.split_heads(x)
    assert_shape(y, (2, 3, 5, 7), "split_heads output for an input of shape (2, 5, 21) with 3 heads")
    snapshot.check("split", y, rtol=0, atol=0, hint=SPLIT_HINT)


def test_merge_heads_index_relation(sub, snapshot):
    y = torch.randn(2, 3, 5, 7)
    attention = _attention(sub, 4, 3, 5)
    x = attention.merge_heads(y)
    assert_shape(x, (2, 5, 21), "merge_heads output for an input of shape (2, 3, 5, 7)")
    snapshot.check("merged", x, rtol=0, atol=0, hint=SPLIT_HINT)


def test_split_merge_roundtrip(sub, snapshot):
    """merge_heads inverts split_heads and the other way round, each a pure rearrangement (its
    output holds exactly the input's entries): judged whatever the order of the heads."""
    hint = "merge_heads must be the exact inverse of split_heads. " + SPLIT_HINT
    configurations = [(4, 3, 7), (2, 4, 2), (5, 1, 5)]
    # every input is drawn before any submission code runs (its __init__ may draw random numbers)
    inputs = [(torch.randn(3, 6, h * d), torch.randn(3, h, 6, d)) for _, h, d in configurations]
    for (head_size, num_heads, dim), (x, y) in zip(configurations, inputs):
        attention = _attention(sub, head_size, num_heads, 6)
        where, tag = f"num_heads={num_heads}, dim={dim}", f"h{num_heads}_d{dim}"
        split = attention.split_heads(x)
        assert_shape(split, (3, num_heads, 6, dim), f"split_heads output ({where})")
        snapshot.judge(f"split_{tag}", split, "rearrangement", what=f"split_heads ({where})")
        snapshot.check(f"merge_of_split_{tag}", attention.merge_heads(split), rtol=0, atol=0, hint=hint)
        merged = attention.merge_heads(y)
        assert_shape(merged, (3, 6, num_heads * dim), f"merge_heads output ({where})")
        snapshot.judge(f"merge_{tag}", merged, "rearrangement", what=f"merge_heads ({where})")
        snapshot.check(f"split_of_merge_{tag}", attention.split_heads(merged), rtol=0, atol=0, hint=hint)


# -- question 3: get_attention_weights -----------------------------------------------------

def test_attention_weights_values(sub, snapshot):
    queries, keys = 1.5 * torch.randn(2, 2, 6, 8), 1.5 * torch.randn(2, 2, 6, 8)
    attention = _attention(sub, 8, 2, 6)
    weights = attention.get_attention_weights(queries, keys)
    assert_shape(weights, (2, 2, 6, 6), "attention weights")
    snapshot.check("weights", weights, hint=WEIGHTS_HINT)


def test_attention_weights_causal_rows_sum_to_one(sub, snapshot):
    """Causal rows that are distributions, anchored by the key each query attends to most
    (which any positive scale of Q K^T keeps): a wrong scale keeps these points."""
    queries, keys = 4.0 * torch.randn(3, 4, 7, 5), 4.0 * torch.randn(3, 4, 7, 5)
    attention = _attention(sub, 5, 4, 7)
    weights = attention.get_attention_weights(queries, keys)
    assert_shape(weights, (3, 4, 7, 7), "attention weights")
    snapshot.judge("weights", weights, "causal_weights", hint=WEIGHTS_HINT)


def test_attention_weights_scaling(sub, snapshot):
    # head_size differs from num_heads * head_size, so sqrt(head_size) is the only scale that fits.
    queries, keys = torch.randn(2, 3, 5, 16), torch.randn(2, 3, 5, 16)
    attention = _attention(sub, 16, 3, 5)
    weights = attention.get_attention_weights(queries, keys)
    assert_shape(weights, (2, 3, 5, 5), "attention weights")
    snapshot.check("weights", weights, hint="Scale the dot products by 1 / sqrt(head_size), the size of one "
                   "head, not of all heads. " + WEIGHTS_HINT)


# -- question 4: apply_attention -----------------------------------------------------------

def test_apply_attention_values(sub, snapshot):
    queries, keys, values = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    attention = _attention(sub, 4, 3, 5)
    outputs = attention.apply_attention(queries, keys, values)
    assert_shape(outputs, (2, 5, 12), "apply_attention output")
    snapshot.check("outputs", outputs, hint=APPLY_HINT)


def test_apply_attention_is_causal(sub, snapshot):
    """Outputs up to position 2 ignore keys and values after it, later outputs use position 0;
    anchored by position 0, whose output is its own value whatever the scale."""
    queries, keys, values = torch.randn(2, 2, 6, 3), torch.randn(2, 2, 6, 3), torch.randn(2, 2, 6, 3)
    attention = _attention(sub, 3, 2, 6)
    outputs = attention.apply_attention(queries, keys, values)
    assert_shape(outputs, (2, 6, 6), "apply_attention output")
    snapshot.check("position_0", outputs[:, :1], hint="position 0 attends only to itself: its output is its "
                   "own value, heads concatenated. " + APPLY_HINT)
    snapshot.judge("outputs", outputs, "finite")
    future_keys, future_values = keys.clone(), values.clone()
    future_keys[:, :, 3:] += 3.0
    future_values[:, :, 3:] += 3.0
    snapshot.judge("outputs_future_changed", attention.apply_attention(queries, future_keys, future_values),
                   "prefix_unchanged_from", earlier="outputs", upto=2)
    past_keys, past_values = keys.clone(), values.clone()
    past_keys[:, :, 0] += 3.0
    past_values[:, :, 0] += 3.0
    snapshot.judge("outputs_past_changed", attention.apply_attention(queries, past_keys, past_values),
                   "later_positions_change", earlier="outputs", start=1, what="apply_attention")


# -- question 5: forward -------------------------------------------------------------------

def _forward_observations(sub, snapshot, head_size, num_heads, sequence_length, seed, **rule):
    """Write known parameters, run forward, send the input, the shapes and the output. The input
    is drawn before the submission's __init__ runs (which may draw random numbers)."""
    hidden_states = torch.randn(2, sequence_length, num_heads * head_size)
    attention = _attention(sub, head_size, num_heads, sequence_length)
    shapes = set_generated_parameters(attention, seed, PARAMETER_SCALE)
    with torch.no_grad():
        outputs = attention(hidden_states)
    assert_shape(outputs, hidden_states.shape, "MultiHeadedAttention output")
    snapshot.check("hidden_states", hidden_states, rtol=0, atol=0)
    snapshot.judge("parameter_shapes", shapes, "parameter_shapes")
    snapshot.judge("outputs", outputs, "mha_forward", inputs="hidden_states", shapes="parameter_shapes",
                   num_heads=num_heads, seed=seed, scale=PARAMETER_SCALE, hint=FORWARD_HINT, **rule)
    return attention, hidden_states


def test_mha_forward_values(sub, snapshot):
    _forward_observations(sub, snapshot, head_size=4, num_heads=3, sequence_length=5, seed=1)


def test_mha_parameter_count(sub, snapshot):
    counts = []
    for head_size, num_heads in [(4, 3), (8, 2), (5, 1)]:
        attention = _attention(sub, head_size, num_heads, 6)
        counts.append(sum(p.numel() for p in attention.parameters() if p.requires_grad))
    snapshot.check("learnable_parameters", counts, hint="the query, key, value and output projections "
                   "(d -> d, each with a bias) have 4 * (d^2 + d) learnable parameters, d = num_heads * head_size.")


def test_mha_forward_causal(sub, snapshot):
    """Causal, and later positions use position 0; anchored by position 0's output, which the
    value and output projections alone decide."""
    noise = torch.randn(2, 3, 12)  # drawn before any submission code runs
    attention, hidden_states = _forward_observations(sub, snapshot, head_size=4, num_heads=3, sequence_length=6,
                                                     seed=2, positions=1)
    with torch.no_grad():
        future = hidden_states.clone()
        future[:, 3:] += noise
        snapshot.judge("outputs_future_changed", attention(future), "prefix_unchanged_from", earlier="outputs", upto=2)
        past = hidden_states.clone()
        past[:, 0] += 1.0
        snapshot.judge("outputs_past_changed", attention(past), "later_positions_change", earlier="outputs", start=1,
                       what="MultiHeadedAttention.forward")
