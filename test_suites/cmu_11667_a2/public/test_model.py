"""Question 1.3 (model.py): the course's five public model tests, seeded and made fast.

The attention reference below is written out explicitly (the rules forbid the fused
scaled_dot_product_attention while these tests run). Query rows whose keys are all padding are
not compared: their output is never used, and implementations legitimately differ there.
"""

import torch

B, S, D, H = 16, 128, 768, 12  # the course's shapes (the attention tests are fast at this size)
HD = D // H


def reference_attention(q, kT, v, allowed):
    """softmax(q kT / sqrt(HD)) v over the allowed keys, in float64; allowed is (B, 1, S, S)."""
    logits = (q.double() @ kT.double()) / q.shape[-1] ** 0.5  # (B, H, S, S)
    logits = logits.masked_fill(~allowed, float("-inf"))
    weights = logits.softmax(dim=-1).nan_to_num(0.0)  # rows with no allowed key: don't care
    out = weights @ v.double()  # (B, H, S, HD)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1).float()  # (B, S, D)


def causal(S, mask=None):
    allowed = torch.ones(S, S, dtype=torch.bool).tril()[None, None]  # (1, 1, S, S)
    if mask is not None:
        allowed = allowed & mask.bool()[:, None, None, :]  # (B, 1, S, S)
    return allowed


def test_q_kT_v(sub):
    mha = sub.model.MultiHeadAttention(D, H, 0.0)
    q, kT, v = mha.q_kT_v(torch.rand(B, S, D))
    assert tuple(q.shape) == (B, H, S, HD), f"q has shape {tuple(q.shape)}, expected (B, H, S, HD) = {(B, H, S, HD)}"
    assert tuple(kT.shape) == (B, H, HD, S), (
        f"kT has shape {tuple(kT.shape)}, expected (B, H, HD, S) = {(B, H, HD, S)}: the keys come back transposed"
    )
    assert tuple(v.shape) == (B, H, S, HD), f"v has shape {tuple(v.shape)}, expected (B, H, S, HD) = {(B, H, S, HD)}"


def test_self_attention(sub):
    mha = sub.model.MultiHeadAttention(D, H, 0.0)
    q, kT, v = torch.rand(B, H, S, HD), torch.rand(B, H, HD, S), torch.rand(B, H, S, HD)
    out = mha.self_attention(q, kT, v)
    assert tuple(out.shape) == (B, S, D), f"self_attention returned shape {tuple(out.shape)}, expected (B, S, D) = {(B, S, D)}"
    expected = reference_attention(q, kT, v, causal(S))
    err = (out - expected).abs().max().item()
    assert torch.allclose(out, expected, rtol=1e-3, atol=1e-5), (
        f"causal self-attention differs from softmax(q kT / sqrt(HD)) v by up to {err:.3g}; "
        "check the scaling, the causal mask (query i sees keys j <= i) and the order of the merged heads"
    )

    # left padding: the first two keys of row 0 are padding
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.float)
    q, kT, v = torch.rand(2, H, 5, HD), torch.rand(2, H, HD, 5), torch.rand(2, H, 5, HD)
    out = mha.self_attention(q, kT, v, mask)
    allowed = causal(5, mask)
    expected = reference_attention(q, kT, v, allowed)
    rows = allowed.any(dim=-1)[:, 0, :]  # (B, S): query rows with at least one allowed key
    err = (out - expected).abs()[rows].max().item()
    assert torch.allclose(out[rows], expected[rows], rtol=1e-3, atol=1e-5), (
        f"masked self-attention differs from the expected output by up to {err:.3g} on non-padding rows; "
        "a key whose attention_mask is 0 must get no weight"
    )


def test_mha_forward(sub):
    mha = sub.model.MultiHeadAttention(D, H)
    out = mha(torch.rand(2, 16, D))
    assert tuple(out.shape) == (2, 16, D), f"MultiHeadAttention returned shape {tuple(out.shape)}, expected (2, 16, {D})"


def test_lm_forward_on_cpu(sub):
    model = sub.model.DecoderLM(10, 64, 4, 128, 2).eval()
    input_ids = torch.randint(10, (2, 3))
    logits = model(input_ids)
    assert tuple(logits.shape) == (2, 3, 10), f"DecoderLM returned shape {tuple(logits.shape)}, expected (B, S, V) = (2, 3, 10)"
    with_mask = model(input_ids, torch.ones(2, 3))
    assert torch.allclose(logits, with_mask, atol=1e-6), (
        "logits with an all-ones attention_mask differ from logits without a mask; they must be equal"
    )


def test_lm_forward_on_device(sub, device):
    """The course runs this one on a GPU; here it runs on the grading device, in training mode
    (dropout on) with a backward pass: every parameter must receive a gradient."""
    model = sub.model.DecoderLM(10, 64, 4, 128, 2).to(device).train()
    input_ids = torch.randint(10, (2, 7), device=device)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7], dtype=torch.float, device=device)
    logits = model(input_ids, mask)
    assert tuple(logits.shape) == (2, 7, 10), f"DecoderLM returned shape {tuple(logits.shape)}, expected (2, 7, 10)"
    assert logits.device.type == torch.device(device).type, f"logits are on {logits.device}, the model on {device}"
    assert torch.isfinite(logits).all(), "the logits contain NaN or inf (a fully masked row filled with -inf?)"
    logits.sum().backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"these parameters get no gradient from the logits: {', '.join(no_grad)}"
