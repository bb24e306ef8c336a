"""Question 1.3 (model.py): values and properties of every class, on tiny shapes.

Weights come from `fill_params` (values fixed by parameter name), never from the student's
init. DecoderBlock and DecoderLM values are recorded for both accepted layer-norm placements
(pre-LN and post-LN); a submission passes by matching either one throughout a test. Outputs at
query rows whose keys are all padding are not compared.
"""

import torch
import torch.nn.functional as F

from grader import properties

D, H = 32, 4
HD = D // H
# a left-padded batch: row 0 has 3 pads, row 1 none, row 2 one
MASK = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]], dtype=torch.float)
REAL = MASK.bool()  # (B, S): query rows that matter
# The handout says GeLU; nanoGPT's tanh approximation (approximate="tanh") is accepted too. Over
# 20 seeds it moved FeedForward and DecoderBlock outputs by up to 6e-4 and DecoderLM logits by up
# to 1.5e-3 (V=1001, S=20; measured): the tolerances below leave about 3x that.
GELU_TOL = dict(rtol=1e-3, atol=2e-3)
LM_TOL = dict(rtol=1e-3, atol=4e-3)


def attention(sub, fill_params, p_dropout=0.0):
    return fill_params(sub.model.MultiHeadAttention(D, H, p_dropout)).eval()


def lm(sub, fill_params, n_vocab=50, n_positions=16, n_layer=2):
    return fill_params(sub.model.DecoderLM(n_vocab, D, H, n_positions, n_layer)).eval()


def test_q_kT_v_values(sub, snapshot, fill_params):
    mha = attention(sub, fill_params)
    x = torch.randn(3, 7, D)
    q, kT, v = mha.q_kT_v(x)
    snapshot.check("q", q, hint="q (B, H, S, HD): head h holds features h*HD .. (h+1)*HD - 1 of q_attn(x)")
    snapshot.check("kT", kT, hint="kT (B, H, HD, S) is the keys transposed, not reshaped")
    snapshot.check("v", v)


def test_self_attention_values(sub, snapshot, fill_params):
    mha = attention(sub, fill_params)
    q, kT, v = torch.randn(3, H, 7, HD), torch.randn(3, H, HD, 7), torch.randn(3, H, 7, HD)
    snapshot.check("causal", mha.self_attention(q, kT, v),
                   hint="scale the logits by 1/sqrt(HD) and let query i attend to keys j <= i only")
    snapshot.check("padded", mha.self_attention(q, kT, v, MASK), mask=REAL[..., None].expand(3, 7, D),
                   hint="keys whose attention_mask is 0 get no weight; fill masked logits before the softmax")


def test_self_attention_is_causal(sub, fill_params):
    mha = attention(sub, fill_params)
    x = torch.randn(2, 9, D)
    changed = x.clone()
    changed[:, 5:] = torch.randn(2, 4, D)  # change the inputs after position 4
    with torch.no_grad():
        err = (mha(x)[:, :5] - mha(changed)[:, :5]).abs().max().item()
    assert err <= 1e-5, (
        f"not causal: changing the inputs after position 4 changed the attention output up to position 4 "
        f"by {err:.3g}; query i may only attend to keys j <= i"
    )


def test_mha_forward_values(sub, snapshot, fill_params):
    mha = attention(sub, fill_params)
    x = torch.randn(3, 7, D)
    snapshot.check("no_mask", mha(x))
    snapshot.check("padded", mha(x, MASK), mask=REAL[..., None].expand(3, 7, D))


def test_attention_has_no_python_loop(sub, fill_params):
    """The handout forbids for-loops for matrix operations: the number of operations one
    attention call dispatches must not grow with the sequence length."""
    mha = attention(sub, fill_params)

    def call(S):
        x = torch.randn(2, S, D)
        mask = torch.ones(2, S)
        mask[0, :2] = 0
        with torch.no_grad():
            mha(x, mask)

    properties.assert_no_loop(call, sizes=(6, 12), what="the sequence length in MultiHeadAttention")


def test_feedforward_values(sub, snapshot, fill_params):
    ff = fill_params(sub.model.FeedForward(D, 0.0)).eval()
    x = torch.randn(3, 5, D)
    snapshot.check("out", ff(x), **GELU_TOL, hint="linear_in, GeLU, linear_out, dropout")


def test_decoder_block_values(sub, snapshot, fill_params):
    block = fill_params(sub.model.DecoderBlock(D, H)).eval()
    x = torch.randn(3, 7, D)
    snapshot.check("padded", block(x, MASK), mask=REAL[..., None].expand(3, 7, D), **GELU_TOL,
                   hint="attention then feed-forward, each with a residual connection and its layer norm")
    snapshot.check("no_mask", block(x, None), **GELU_TOL)


def test_embed_positions_follow_the_mask(sub, snapshot, fill_params):
    model = lm(sub, fill_params)
    input_ids = torch.randint(50, (3, 7))
    x = model.embed(input_ids, MASK)
    assert tuple(x.shape) == (3, 7, D), f"embed returned shape {tuple(x.shape)}, expected (B, S, D) = (3, 7, {D})"
    snapshot.check("embed", x, mask=REAL[..., None].expand(3, 7, D),
                   hint="position ids are cumsum(attention_mask) - 1, so the first real token is at position 0")
    # the real tokens of a left-padded row are embedded as if the row had no padding
    alone = model.embed(input_ids[:1, 3:])
    assert torch.allclose(x[0, 3:], alone[0], atol=1e-6), (
        "embedding a left-padded row differs from embedding its real tokens alone: positions must count "
        "real tokens only (cumsum(attention_mask) - 1), not the padding"
    )
    snapshot.check("no_mask", model.embed(input_ids))


def test_weight_tying_and_flops(sub, snapshot, fill_params):
    model = lm(sub, fill_params, n_vocab=50, n_positions=16, n_layer=2)
    x = torch.randn(2, 5, D)
    logits = model.token_logits(x)
    assert tuple(logits.shape) == (2, 5, 50), f"token_logits returned shape {tuple(logits.shape)}, expected (2, 5, 50)"
    with torch.no_grad():
        model.token_embeddings.weight.mul_(2.0)
    doubled = model.token_logits(x)
    assert torch.allclose(doubled, 2 * logits, rtol=1e-5, atol=1e-5), (
        "token_logits does not follow the token embedding matrix: with weight tying the logits are "
        "hidden states @ token_embeddings.weight.T (handout Q1.2)"
    )
    n_params = sum(p.numel() for p in model.parameters())
    snapshot.check("n_params", n_params, hint="the output layer shares the token embedding matrix: no separate (V, D) weight")
    snapshot.check("flops_per_token", model.flops_per_token)


def test_lm_forward_values(sub, snapshot, fill_params):
    model = lm(sub, fill_params)
    input_ids = torch.randint(50, (3, 7))
    snapshot.check("padded", model(input_ids, MASK), mask=REAL[..., None].expand(3, 7, 50), **LM_TOL,
                   hint="embed, the blocks, the final layer norm `ln`, then the tied output layer")
    snapshot.check("no_mask", model(input_ids), **LM_TOL)


def test_lm_left_padding_changes_nothing(sub, fill_params):
    model = lm(sub, fill_params)
    input_ids = torch.randint(50, (3, 7))
    padded = model(input_ids, MASK)
    assert torch.isfinite(padded[REAL]).all(), (
        "logits of real tokens are NaN or inf with left padding: fill masked attention logits with "
        "torch.finfo(dtype).min rather than -inf, so fully padded rows stay finite"
    )
    for b, n_pad in enumerate((3, 0, 1)):
        alone = model(input_ids[b : b + 1, n_pad:])
        err = (padded[b, n_pad:] - alone[0]).abs().max().item()
        assert err < 1e-4, (
            f"row {b} with {n_pad} left pads gives logits that differ by {err:.3g} from the same tokens "
            "without padding: padding keys must be masked and positions must count real tokens only"
        )


def test_lm_is_causal(sub, fill_params):
    model = lm(sub, fill_params)
    input_ids = torch.randint(50, (2, 9))

    properties.assert_causal(model, input_ids, 4, 50)


def test_lm_dropout_only_in_training(sub):
    model = sub.model.DecoderLM(50, D, H, 16, 1, p_dropout=0.5)
    input_ids = torch.randint(50, (2, 6))
    model.train()
    a, b = model(input_ids), model(input_ids)
    assert not torch.allclose(a, b), "in train() mode two forward passes agree: dropout is not applied"
    model.eval()
    a, b = model(input_ids), model(input_ids)
    assert torch.equal(a, b), "in eval() mode two forward passes differ: dropout must be off in evaluation"
    logits = model(input_ids)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, 50), input_ids[:, 1:].reshape(-1))
    assert torch.isfinite(loss), "the loss of an untrained model is not finite"
