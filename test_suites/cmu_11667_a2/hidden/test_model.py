"""Question 1.3 (model.py): the hidden checks behind the five public unit tests.

The handout pays 5 points per passing public test; each public test earns them only if the
hidden checks of the same function pass too (the rubric's `requires`), so these carry no
points of their own. Every verdict is the grading parent's: values are compared with the
reference's, properties (causality, dropout, no Python loop, device placement) are judged from
the raw observations sent.

Weights come from `fill_params` (values fixed by parameter name), never from the student's
init. DecoderBlock and DecoderLM values are recorded for both accepted layer-norm placements
(pre-LN and post-LN); a submission passes by matching either one throughout a test. Outputs at
query rows whose keys are all padding are not compared.
"""

import pytest
import torch

from grader import properties

D, H = 32, 4
HD = D // H
# a left-padded batch: row 0 has 3 pads, row 1 none, row 2 one
MASK = torch.tensor(
    [[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]], dtype=torch.float
)
REAL = MASK.bool()  # (B, S): query rows that matter
# The handout says GeLU; nanoGPT's tanh approximation (approximate="tanh") is accepted too. Over
# 20 seeds it moved FeedForward and DecoderBlock outputs by up to 6e-4 and DecoderLM logits by up
# to 1.5e-3 (V=1001, S=20; measured): the tolerances below leave about 3x that.
GELU_TOL = {"rtol": 1e-3, "atol": 2e-3}
LM_TOL = {"rtol": 1e-3, "atol": 4e-3}
# the loop checks: sizes at which the number of dispatched operations must be the same
SEQ_LENS, BATCHES, HEADS = [6, 12], [2, 5], [2, 8]
LOOP_RULE = "the handout asks for matrix operations without Python for-loops"


def build(make, fill_params):
    """A module with name-determined weights; the random draws of its constructor (which a
    student's __init__ may order differently) do not change the inputs drawn after it."""
    with torch.random.fork_rng(devices=[]):
        return fill_params(make()).eval()


def attention(sub, fill_params, p_dropout=0.0, n_head=H):
    return build(lambda: sub.model.MultiHeadAttention(D, n_head, p_dropout), fill_params)


def lm(sub, fill_params, n_vocab=50, n_positions=16, n_layer=2, **kwargs):
    return build(
        lambda: sub.model.DecoderLM(n_vocab, D, H, n_positions, n_layer, **kwargs), fill_params
    )


def left_padded_mask(B, S):
    mask = torch.ones(B, S)
    mask[0, :2] = 0  # the first row is left-padded
    return mask


def judge_no_loop(snapshot, key, call, make_inputs, sizes, over, min_ops):
    """Send the number of operations ``call(*make_inputs(n))`` dispatches at each size (the inputs
    are made before counting); the parent judges them."""
    inputs = {n: make_inputs(n) for n in sizes}
    with torch.no_grad():
        counts = properties.op_counts(lambda n: call(*inputs[n]), sizes=sizes)
    snapshot.judge(
        key, counts, "no_growth", sizes=sizes, over=over, min_ops=min_ops, rule_text=LOOP_RULE
    )


# -- MultiHeadAttention ------------------------------------------------------------------------


def test_q_kT_v_values(sub, snapshot, fill_params):
    mha = attention(sub, fill_params)
    x = torch.randn(3, 7, D)
    q, kT, v = mha.q_kT_v(x)
    snapshot.check(
        "q", q, hint="q (B, H, S, HD): head h holds features h*HD .. (h+1)*HD - 1 of q_attn(x)"
    )
    snapshot.check("kT", kT, hint="kT (B, H, HD, S) is the keys transposed, not reshaped")
    snapshot.check("v", v)


def test_q_kT_v_has_no_python_loop(sub, snapshot, fill_params):
    """q_kT_v splits the heads with reshapes, not a loop over heads, positions or the batch."""
    mha = attention(sub, fill_params)
    snapshot.check("q_kT_v", mha.q_kT_v(torch.randn(2, 5, D)))  # anchor: the work is the right work
    by_heads = {h: attention(sub, fill_params, n_head=h) for h in HEADS}
    judge_no_loop(
        snapshot,
        "ops_by_seq_len",
        mha.q_kT_v,
        lambda S: (torch.randn(2, S, D),),
        SEQ_LENS,
        "the sequence length in q_kT_v",
        3,
    )
    judge_no_loop(
        snapshot,
        "ops_by_batch",
        mha.q_kT_v,
        lambda B: (torch.randn(B, 6, D),),
        BATCHES,
        "the batch size in q_kT_v",
        3,
    )
    judge_no_loop(
        snapshot,
        "ops_by_heads",
        lambda h, x: by_heads[h].q_kT_v(x),
        lambda h: (h, torch.randn(2, 6, D)),
        HEADS,
        "the number of heads in q_kT_v",
        3,
    )


def test_self_attention_values(sub, snapshot, fill_params):
    mha = attention(sub, fill_params)
    q, kT, v = torch.randn(3, H, 7, HD), torch.randn(3, H, HD, 7), torch.randn(3, H, 7, HD)
    snapshot.check(
        "causal",
        mha.self_attention(q, kT, v),
        hint="scale the logits by 1/sqrt(HD) and let query i attend to keys j <= i only",
    )
    snapshot.check(
        "padded",
        mha.self_attention(q, kT, v, MASK),
        mask=REAL[..., None].expand(3, 7, D),
        hint="keys whose attention_mask is 0 get no weight; fill masked logits before the softmax",
    )


def test_self_attention_is_causal(sub, snapshot, fill_params):
    mha = attention(sub, fill_params)
    q, kT, v = torch.randn(2, H, 9, HD), torch.randn(2, H, HD, 9), torch.randn(2, H, 9, HD)
    q2, kT2, v2 = (
        q.clone(),
        kT.clone(),
        v.clone(),
    )  # the queries, keys and values after position 4 change
    q2[:, :, 5:], kT2[..., 5:], v2[:, :, 5:] = (
        torch.randn(2, H, 4, HD),
        torch.randn(2, H, HD, 4),
        torch.randn(2, H, 4, HD),
    )
    with torch.no_grad():
        snapshot.check("out", mha.self_attention(q, kT, v))  # anchor: all zeros would be "causal"
        snapshot.judge(
            "out_inputs_changed_after_4",
            mha.self_attention(q2, kT2, v2),
            "prefix_unchanged",
            key="out",
            upto=4,
            hint="query i may only attend to keys j <= i",
        )


def test_attention_has_no_python_loop(sub, snapshot, fill_params):
    """The handout forbids for-loops for matrix operations: the number of operations one
    self_attention call dispatches must not grow with the sequence length, the batch or the
    number of heads."""
    mha = attention(sub, fill_params)

    def inputs(B, n_head, S):
        hd = D // n_head
        return (
            torch.randn(B, n_head, S, hd),
            torch.randn(B, n_head, hd, S),
            torch.randn(B, n_head, S, hd),
            left_padded_mask(B, S),
        )

    snapshot.check(
        "attention",
        mha.self_attention(*inputs(2, H, 5)),
        mask=torch.tensor([[0, 0, 1, 1, 1], [1] * 5]).bool()[..., None].expand(2, 5, D),
    )  # anchor
    by_heads = {h: attention(sub, fill_params, n_head=h) for h in HEADS}
    judge_no_loop(
        snapshot,
        "ops_by_seq_len",
        mha.self_attention,
        lambda S: inputs(2, H, S),
        SEQ_LENS,
        "the sequence length in self_attention",
        4,
    )
    judge_no_loop(
        snapshot,
        "ops_by_batch",
        mha.self_attention,
        lambda B: inputs(B, H, 6),
        BATCHES,
        "the batch size in self_attention",
        4,
    )
    judge_no_loop(
        snapshot,
        "ops_by_heads",
        lambda h, *x: by_heads[h].self_attention(*x),
        lambda h: (h, *inputs(2, h, 6)),
        HEADS,
        "the number of heads in self_attention",
        4,
    )


def test_mha_forward_values(sub, snapshot, fill_params):
    mha = attention(sub, fill_params)
    x = torch.randn(3, 7, D)
    snapshot.check("no_mask", mha(x))
    snapshot.check("padded", mha(x, MASK), mask=REAL[..., None].expand(3, 7, D))


# -- FeedForward, DecoderBlock -------------------------------------------------------------------


def test_feedforward_values(sub, snapshot, fill_params):
    ff = build(lambda: sub.model.FeedForward(D, 0.0), fill_params)
    x = torch.randn(3, 5, D)
    snapshot.check("out", ff(x), **GELU_TOL, hint="linear_in, GeLU, linear_out, dropout")


def test_feedforward_has_no_python_loop(sub, snapshot, fill_params):
    ff = build(lambda: sub.model.FeedForward(D, 0.0), fill_params)
    snapshot.check("out", ff(torch.randn(2, 5, D)), **GELU_TOL)  # anchor
    judge_no_loop(
        snapshot,
        "ops_by_seq_len",
        ff,
        lambda S: (torch.randn(2, S, D),),
        SEQ_LENS,
        "the sequence length in FeedForward",
        3,
    )
    judge_no_loop(
        snapshot,
        "ops_by_batch",
        ff,
        lambda B: (torch.randn(B, 6, D),),
        BATCHES,
        "the batch size in FeedForward",
        3,
    )


def test_decoder_block_values(sub, snapshot, fill_params):
    block = build(lambda: sub.model.DecoderBlock(D, H), fill_params)
    x = torch.randn(3, 7, D)
    snapshot.check(
        "padded",
        block(x, MASK),
        mask=REAL[..., None].expand(3, 7, D),
        **GELU_TOL,
        hint="attention then feed-forward, each with a residual connection and its layer norm",
    )
    snapshot.check("no_mask", block(x, None), **GELU_TOL)


# -- DecoderLM ----------------------------------------------------------------------------------


def test_embed_positions_follow_the_mask(sub, snapshot, fill_params):
    model = lm(sub, fill_params)
    input_ids = torch.randint(50, (3, 7))
    snapshot.check(
        "embed",
        model.embed(input_ids, MASK),
        mask=REAL[..., None].expand(3, 7, D),
        hint="position ids are cumsum(attention_mask) - 1, so the first real token is at "
        "position 0",
    )
    # the real tokens of a left-padded row are embedded as if the row had no padding
    snapshot.check(
        "row_0_without_padding",
        model.embed(input_ids[:1, 3:]),
        hint="positions count real tokens only (cumsum(attention_mask) - 1), not the padding",
    )
    snapshot.check("no_mask", model.embed(input_ids))


def test_embed_has_no_python_loop(sub, snapshot, fill_params):
    model = lm(sub, fill_params)
    snapshot.check(
        "embed",
        model.embed(torch.randint(50, (2, 5)), left_padded_mask(2, 5)),
        mask=torch.tensor([[0, 0, 1, 1, 1], [1] * 5]).bool()[..., None].expand(2, 5, D),
    )  # anchor
    judge_no_loop(
        snapshot,
        "ops_by_seq_len",
        model.embed,
        lambda S: (torch.randint(50, (2, S)), left_padded_mask(2, S)),
        SEQ_LENS,
        "the sequence length in embed",
        2,
    )
    judge_no_loop(
        snapshot,
        "ops_by_batch",
        model.embed,
        lambda B: (torch.randint(50, (B, 6)), left_padded_mask(B, 6)),
        BATCHES,
        "the batch size in embed",
        2,
    )


def test_weight_tying_and_flops(sub, snapshot, fill_params):
    model = lm(sub, fill_params, n_vocab=50, n_positions=16, n_layer=2)
    x = torch.randn(2, 5, D)
    snapshot.check(
        "logits",
        model.token_logits(x),
        hint="with weight tying the logits are hidden states @ token_embeddings.weight.T "
        "(handout Q1.2)",
    )
    with torch.no_grad():
        model.token_embeddings.weight.mul_(2.0)
    snapshot.check(
        "logits_with_doubled_embeddings",
        model.token_logits(x),
        hint="token_logits must use the token embedding matrix itself (weight tying)",
    )
    n_params = sum(p.numel() for p in model.parameters())
    snapshot.check(
        "n_params",
        n_params,
        hint="the output layer shares the token embedding matrix: no separate (V, D) weight",
    )


def test_lm_forward_values(sub, snapshot, fill_params):
    model = lm(sub, fill_params)
    input_ids = torch.randint(50, (3, 7))
    snapshot.check(
        "padded",
        model(input_ids, MASK),
        mask=REAL[..., None].expand(3, 7, 50),
        **LM_TOL,
        hint="embed, the blocks, the final layer norm `ln`, then the tied output layer",
    )
    snapshot.check("no_mask", model(input_ids), **LM_TOL)


def test_lm_left_padding_changes_nothing(sub, snapshot, fill_params):
    model = lm(sub, fill_params)
    input_ids = torch.randint(50, (3, 7))
    padded = model(input_ids, MASK)
    if (
        isinstance(padded, torch.Tensor)
        and padded.shape == (3, 7, 50)
        and not torch.isfinite(padded[REAL]).all()
    ):
        pytest.fail(
            "logits of real tokens are NaN or inf with left padding: fill masked attention logits "
            "with "
            "torch.finfo(dtype).min rather than -inf, so fully padded rows stay finite",
            pytrace=False,
        )
    snapshot.check("padded", padded, mask=REAL[..., None].expand(3, 7, 50), **LM_TOL)
    for b, n_pad in enumerate((3, 0, 1)):
        # the same tokens without their padding: the parent compares both with the reference
        snapshot.check(
            f"row_{b}_without_padding",
            model(input_ids[b : b + 1, n_pad:]),
            **LM_TOL,
            hint="padding keys must be masked and positions must count real tokens only",
        )


def test_lm_is_causal(sub, snapshot, fill_params):
    model = lm(sub, fill_params)
    input_ids = torch.randint(50, (2, 9))
    changed = properties.perturb_after(input_ids, position=4, vocab_size=50)
    with torch.no_grad():
        snapshot.check("logits", model(input_ids), **LM_TOL)  # anchor
        snapshot.judge(
            "logits_tokens_changed_after_4",
            model(changed),
            "prefix_unchanged",
            key="logits",
            upto=4,
            hint="attention must not look at later tokens",
        )


def test_lm_has_no_python_loop(sub, snapshot, fill_params):
    """A loop over the decoder blocks is fine (n_layer is fixed here); a loop over the batch or
    the positions anywhere in the forward pass is not."""
    model = lm(sub, fill_params)
    snapshot.check(
        "logits",
        model(torch.randint(50, (2, 5)), left_padded_mask(2, 5)),
        **LM_TOL,
        mask=torch.tensor([[0, 0, 1, 1, 1], [1] * 5]).bool()[..., None].expand(2, 5, 50),
    )  # anchor
    judge_no_loop(
        snapshot,
        "ops_by_seq_len",
        model,
        lambda S: (torch.randint(50, (2, S)), left_padded_mask(2, S)),
        SEQ_LENS,
        "the sequence length in DecoderLM.forward",
        10,
    )
    judge_no_loop(
        snapshot,
        "ops_by_batch",
        model,
        lambda B: (torch.randint(50, (B, 6)), left_padded_mask(B, 6)),
        BATCHES,
        "the batch size in DecoderLM.forward",
        10,
    )


def test_lm_dropout_only_in_training(sub, snapshot, fill_params):
    model = lm(sub, fill_params, n_layer=1, p_dropout=0.5)
    input_ids = torch.randint(50, (2, 6))
    model.eval()
    with torch.no_grad():
        snapshot.check("eval", model(input_ids), **LM_TOL)  # anchor
        snapshot.judge(
            "eval_again",
            model(input_ids),
            "same_as",
            key="eval",
            what="in eval() mode two forward passes",
            hint="dropout must be off in evaluation",
        )
        model.train()
        first = model(input_ids)
        snapshot.judge(
            "train",
            first,
            "differs_from",
            key="eval",
            what="in train() mode the logits equal the eval() logits: dropout is not applied",
        )
        snapshot.judge(
            "train_again",
            model(input_ids),
            "differs_from",
            key="train",
            what="in train() mode two forward passes agree: dropout is not applied",
        )


def test_lm_forward_on_meta_device(sub, snapshot, fill_params, device_mixing):
    """Device placement without a GPU: model and inputs on torch's `meta` device, with and
    without an attention mask. A mask or position ids made on the CPU and combined with the
    inputs fail here as they would on a GPU."""
    model = lm(sub, fill_params).to("meta")
    input_ids, mask = torch.randint(50, (3, 7)).to("meta"), MASK.to("meta")
    with device_mixing() as mixing:
        try:
            padded, plain = model(input_ids, mask), model(input_ids)
        except (RuntimeError, NotImplementedError) as err:
            pytest.fail(
                f"DecoderLM fails with the model and its inputs on another device than the CPU "
                f"({type(err).__name__}: {str(err)[:200]}): build masks and position ids on the "
                "inputs' device (device=input_ids.device, or .to(q.device))",
                pytrace=False,
            )
    for name, logits in (("with_mask", padded), ("without_mask", plain)):
        if not isinstance(logits, torch.Tensor):
            pytest.fail(
                f"DecoderLM returned {'`...`' if logits is Ellipsis else type(logits).__name__}, "
                "expected a tensor of logits",
                pytrace=False,
            )
        snapshot.check(
            f"{name}_device_and_shape",
            [logits.device.type, list(logits.shape)],
            hint="the logits must be computed on the inputs' device",
        )
    snapshot.check(
        "ops_mixing_devices",
        sorted(mixing.ops),
        hint="these operations combined a tensor on the inputs' device with one made on the CPU: "
        "create masks and position ids with device=input_ids.device",
    )
