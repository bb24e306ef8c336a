"""Problem 2, questions 6-8 (gpt1_solution.py): MiniGPT1.get_embeddings, forward and loss.

Every point is decided by the grading parent from what the tests send: values compared with the
reference's, and properties (causality, log-probabilities) judged by the rules of ../judges.py
next to such a value. forward is run with known layers in place of the Blocks, so its value does
not depend on the layout of the student's attention (graded in questions 2-5).
"""
import torch
from mila_checks import assert_shape, fill_parameters, nll_mistakes, padded_mask
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


class KnownCausalLayer(KnownLayer):
    """A fixed stand-in for a Block that mixes positions causally (the mean of positions <= t)."""

    def forward(self, hidden_states):
        counts = torch.arange(1, hidden_states.shape[1] + 1, dtype=hidden_states.dtype).reshape(1, -1, 1)
        running_mean = hidden_states.cumsum(dim=1) / counts
        return torch.tanh(running_mean @ self.weight) + hidden_states


def _model(sub, num_layers=1, sequence_length=S):
    """A model with parameters set by name. Its __init__ runs the submission's attention code,
    which may draw random numbers: every test draws its inputs before calling this."""
    model = sub.gpt1.MiniGPT1(V, E, sequence_length, HEADS, num_layers)
    return fill_parameters(model, {"embedding": 0.7}).eval()


def test_get_embeddings_values(sub, snapshot):
    """Inputs of the full sequence_length, the only ones the handout uses."""
    inputs = torch.randint(1, V, (2, S))
    model = _model(sub)
    with torch.no_grad():
        embeddings = model.get_embeddings(inputs)
    assert_shape(embeddings, (2, S, E), "get_embeddings output")
    snapshot.check("embeddings", embeddings, hint=EMBEDDING_HINT)


def test_get_embeddings_shorter_sequences(sub, snapshot):
    """Not graded (0 points): the handout only embeds full-length sequences. Inputs shorter
    than sequence_length need positions 0 .. length - 1 (torch.arange(inputs.shape[1]))."""
    inputs = torch.randint(1, V, (3, 4))
    model = _model(sub)
    with torch.no_grad():
        embeddings = model.get_embeddings(inputs)
    assert_shape(embeddings, (3, 4, E), "get_embeddings output for sequences shorter than sequence_length")
    snapshot.check("embeddings", embeddings, hint=EMBEDDING_HINT)


def test_forward_values_with_known_layers(sub, snapshot):
    inputs = torch.randint(1, V, (2, S))
    model = _model(sub, num_layers=2)
    model.layers = nn.ModuleList([KnownLayer(E, seed=1), KnownLayer(E, seed=2)])
    with torch.no_grad():
        log_probas = model(inputs)
    assert_shape(log_probas, (2, S, V), "MiniGPT1 output")
    snapshot.check("log_probas", log_probas, hint=FORWARD_HINT)


def test_forward_log_probas_and_causal(sub, snapshot):
    inputs = torch.randint(1, V, (2, 8))
    changed = inputs.clone()
    changed[:, 4:] = (changed[:, 4:] + torch.randint_like(changed[:, 4:], 1, V)) % (V - 1) + 1
    model = _model(sub, num_layers=2, sequence_length=8)
    model.layers = nn.ModuleList([KnownCausalLayer(E, seed=3), KnownCausalLayer(E, seed=4)])
    with torch.no_grad():
        log_probas = model(inputs)
        assert_shape(log_probas, (2, 8, V), "MiniGPT1 output")
        snapshot.judge("normalised", log_probas, "log_probabilities", what="MiniGPT1.forward's output",
                       hint=FORWARD_HINT)
        snapshot.check("log_probas", log_probas, hint=FORWARD_HINT)
        snapshot.judge("log_probas_future_changed", model(changed), "prefix_unchanged_from", earlier="log_probas", upto=3)


def _padded_batch():
    lengths = [S, 1, 3, 6]
    mask = padded_mask(lengths, S)
    log_probas = torch.log_softmax(2.0 * torch.randn(4, S, V), dim=-1)
    targets = torch.randint(1, V, (4, S))
    targets[mask == 0] = 0
    log_probas[..., 0] = torch.where(mask == 0, torch.tensor(-30.0), log_probas[..., 0])
    return log_probas, targets, mask


def _loss(model, log_probas, targets, mask):
    loss = model.loss(log_probas, targets, mask)
    assert_shape(loss, (), "loss")
    return loss


def test_gpt_loss_values_padded(sub, snapshot):
    log_probas, targets, mask = _padded_batch()
    model = sub.gpt1.MiniGPT1(V, E, S, HEADS, 1)
    snapshot.judge("loss", _loss(model, log_probas, targets, mask), "loss_value",
                   mistakes=nll_mistakes(log_probas, targets, mask), what="MiniGPT1.loss", hint=LOSS_HINT)


def test_gpt_loss_per_sequence_mean(sub, snapshot):
    """A batch whose per-sequence mean differs from the token mean, and its gradient."""
    lengths = [2, 7, 4]
    mask = padded_mask(lengths, S)
    log_probas = torch.log_softmax(torch.randn(3, S, V), dim=-1)
    targets = torch.randint(1, V, (3, S))
    targets[mask == 0] = 0
    log_probas.requires_grad_()
    model = sub.gpt1.MiniGPT1(V, E, S, HEADS, 1)
    loss = _loss(model, log_probas, targets, mask)
    snapshot.judge("loss", loss, "loss_value", mistakes=nll_mistakes(log_probas, targets, mask),
                   what="MiniGPT1.loss", hint=LOSS_HINT)
    if not loss.requires_grad:
        raise AssertionError("MiniGPT1.loss must be differentiable with respect to log_probas "
                             "(no .item(), numpy or detach inside).")
    loss.backward()
    snapshot.check("gradient", log_probas.grad, hint="MiniGPT1.loss must be differentiable with respect "
                   "to log_probas; each real position of a sequence of length T weighs 1 / (T * batch_size).")
