"""Public shape tests for gpt1_solution.py, as the course's tests_gpt1_public.py checks them.

They check input/output shapes on random inputs only; values are graded by hidden tests.
"""
import torch

HEAD_SIZE, NUM_HEADS, SEQ, B = 11, 13, 17, 7
DIM = 23  # split_heads/merge_heads accept any per-head size


def _check_shape(name, value, shape):
    assert isinstance(value, torch.Tensor), f"{name} should be a tensor of shape {shape}, got {type(value).__name__}"
    assert tuple(value.shape) == shape, f"{name} has shape {tuple(value.shape)}, expected {shape}"


def _attention(sub):
    return sub.gpt1.MultiHeadedAttention(HEAD_SIZE, NUM_HEADS, SEQ)


def test_layernorm_forward_shape(sub):
    layer_norm = sub.gpt1.LayerNorm(11)
    _check_shape("LayerNorm output", layer_norm(torch.randn(3, 5, 7, 11)), (3, 5, 7, 11))


def test_get_attention_weights_shape(sub):
    queries = torch.randn(B, NUM_HEADS, SEQ, HEAD_SIZE)
    keys = torch.randn(B, NUM_HEADS, SEQ, HEAD_SIZE)
    _check_shape("attention weights", _attention(sub).get_attention_weights(queries, keys), (B, NUM_HEADS, SEQ, SEQ))


def test_apply_attention_shape(sub):
    queries, keys, values = (torch.randn(B, NUM_HEADS, SEQ, HEAD_SIZE) for _ in range(3))
    outputs = _attention(sub).apply_attention(queries, keys, values)
    _check_shape("apply_attention output", outputs, (B, SEQ, NUM_HEADS * HEAD_SIZE))


def test_split_heads_shape(sub):
    outputs = _attention(sub).split_heads(torch.randn(B, SEQ, NUM_HEADS * DIM))
    _check_shape("split_heads output", outputs, (B, NUM_HEADS, SEQ, DIM))


def test_merge_heads_shape(sub):
    outputs = _attention(sub).merge_heads(torch.randn(B, NUM_HEADS, SEQ, DIM))
    _check_shape("merge_heads output", outputs, (B, SEQ, NUM_HEADS * DIM))


def test_attention_forward_shape(sub):
    outputs = _attention(sub)(torch.randn(B, SEQ, NUM_HEADS * HEAD_SIZE))
    _check_shape("MultiHeadedAttention output", outputs, (B, SEQ, NUM_HEADS * HEAD_SIZE))


def test_minigpt1_forward_shape(sub):
    model = sub.gpt1.MiniGPT1(11, 17 * 13, 23, 13, 3)  # vocabulary, embedding, sequence, heads, layers
    _check_shape("MiniGPT1 output", model(torch.randint(0, 11, (B, 23))), (B, 23, 11))


def test_minigpt1_loss_shape(sub):
    model = sub.gpt1.MiniGPT1(11, 17 * 13, 23, 13, 3)
    log_probas = torch.log_softmax(torch.randn(B, 23, 11), dim=-1)
    targets = torch.randint(0, 11, (B, 23))
    mask = torch.randint(0, 2, (B, 23)).float()
    mask[:, 0] = 1.0
    _check_shape("loss", model.loss(log_probas, targets, mask), ())
