"""Problem 2, questions 6-8 (gpt1_solution.py): MiniGPT1.get_embeddings, forward and loss."""
import torch
from mila_checks import (
    assert_close,
    assert_prefix_unchanged,
    assert_shape,
    fill_parameters,
    padded_mask,
    sequence_mean_nll_f64,
    token_mean_nll_f64,
)
from torch import nn

V, E, S, HEADS = 30, 12, 7, 3
EMBEDDING_HINT = (
    "get_embeddings should call self.embedding(inputs, positions) with positions "
    "0, 1, ..., sequence_length - 1 for every sequence of the batch."
)
FORWARD_HINT = (
    "forward: get_embeddings, then every layer of self.layers in order, then self.classifier, "
    "then log_softmax over the vocabulary (log-probabilities, not logits)."
)
LOSS_HINT = (
    "The loss averages each sequence's NLL over its own real tokens (mask == 1), then "
    "averages these per-sequence losses over the batch."
)


class KnownLayer(nn.Module):
    """A fixed stand-in for a Block, so forward can be value-tested whatever the attention layout."""

    def __init__(self, size, seed):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(size, size, generator=generator) / size ** 0.5)

    def forward(self, hidden_states):
        return torch.tanh(hidden_states @ self.weight) + hidden_states


def _model(sub, num_layers=1, sequence_length=S):
    model = sub.gpt1.MiniGPT1(V, E, sequence_length, HEADS, num_layers)
    return fill_parameters(model, {"embedding": 0.7}).eval()


def test_get_embeddings_values(sub, snapshot):
    full = torch.randint(1, V, (2, S))
    short = torch.randint(1, V, (3, 4))
    model = _model(sub)
    with torch.no_grad():
        embeddings = model.get_embeddings(full)
        short_embeddings = model.get_embeddings(short)
    assert_shape(embeddings, (2, S, E), "get_embeddings output")
    assert_shape(short_embeddings, (3, 4, E), "get_embeddings output for sequences shorter than sequence_length")
    snapshot.check("full", embeddings, hint=EMBEDDING_HINT)
    snapshot.check("short", short_embeddings, hint=EMBEDDING_HINT)


def test_forward_values_with_known_layers(sub, snapshot):
    inputs = torch.randint(1, V, (2, S))
    model = _model(sub, num_layers=2)
    model.layers = nn.ModuleList([KnownLayer(E, seed=1), KnownLayer(E, seed=2)])
    with torch.no_grad():
        log_probas = model(inputs)
    assert_shape(log_probas, (2, S, V), "MiniGPT1 output")
    snapshot.check("log_probas", log_probas, hint=FORWARD_HINT)


def test_forward_log_probas_and_causal(sub):
    inputs = torch.randint(1, V, (2, 8))
    model = _model(sub, num_layers=2, sequence_length=8)
    with torch.no_grad():
        before, _ = assert_prefix_unchanged(
            model, inputs, 3, "MiniGPT1.forward",
            perturb=lambda part: (part + torch.randint_like(part, 1, V)) % (V - 1) + 1,
        )
    assert_shape(before, (2, 8, V), "MiniGPT1 output")
    error = torch.logsumexp(before.double(), dim=-1).abs().max().item()
    if error > 1e-4:
        raise AssertionError(
            "MiniGPT1.forward must return log-probabilities (log_softmax over the vocabulary), not "
            f"logits: logsumexp over the vocabulary is off from 0 by up to {error:.3g}."
        )


def _padded_batch():
    lengths = [S, 1, 3, 6]
    mask = padded_mask(lengths, S)
    log_probas = torch.log_softmax(2.0 * torch.randn(4, S, V), dim=-1)
    targets = torch.randint(1, V, (4, S))
    targets[mask == 0] = 0
    log_probas[..., 0] = torch.where(mask == 0, torch.tensor(-30.0), log_probas[..., 0])
    return log_probas, targets, mask


def test_gpt_loss_values_padded(sub, snapshot):
    log_probas, targets, mask = _padded_batch()
    model = sub.gpt1.MiniGPT1(V, E, S, HEADS, 1)
    loss = model.loss(log_probas, targets, mask)
    assert_shape(loss, (), "loss")
    snapshot.check("loss", loss, hint=LOSS_HINT)


def test_gpt_loss_per_sequence_mean(sub):
    log_probas, targets, mask = _padded_batch()
    log_probas.requires_grad_()
    model = sub.gpt1.MiniGPT1(V, E, S, HEADS, 1)
    loss = model.loss(log_probas, targets, mask)
    assert_shape(loss, (), "loss")
    if abs(float(loss.detach()) - float(token_mean_nll_f64(log_probas, targets, mask))) < 1e-4:
        raise AssertionError("MiniGPT1.loss is the mean NLL over all real tokens of the batch. " + LOSS_HINT)
    assert_close(loss, sequence_mean_nll_f64(log_probas, targets, mask), "loss", hint=LOSS_HINT)
    loss.backward()
    if log_probas.grad is None or not torch.isfinite(log_probas.grad).all():
        raise AssertionError("MiniGPT1.loss must be differentiable with respect to log_probas.")
