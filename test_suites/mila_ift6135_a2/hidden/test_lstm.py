"""Problem 1 (lstm_solution.py): LSTM.forward (question 1) and LSTM.loss (question 2)."""
import torch
from mila_checks import (
    assert_close,
    assert_shape,
    fill_parameters,
    padded_mask,
    sequence_mean_nll_f64,
    token_mean_nll_f64,
)

V, E, H = 50, 16, 12
SCALES = {"embedding": 0.5}
FORWARD_HINT = (
    "forward should return (log_softmax(classifier(outputs)), (h, c)) where "
    "outputs, (h, c) = self.lstm(self.embedding(inputs), hidden_states)."
)
LOSS_HINT = (
    "The loss averages each sequence's NLL over its own real tokens (mask == 1), then "
    "averages these per-sequence losses over the batch."
)


def _model(sub, num_layers=1):
    return fill_parameters(sub.lstm.LSTM(V, E, H, num_layers), SCALES).eval()


def _inputs(batch_size, sequence_length):
    inputs = torch.randint(1, V, (batch_size, sequence_length))
    inputs[0, -3:] = 0  # padding at the end of the first sequence, as the data set makes it
    return inputs


def _forward(model, inputs, hidden_states):
    outputs = model(inputs, hidden_states)
    if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
        raise AssertionError("LSTM.forward must return a pair (log_probas, (h, c))")
    log_probas, state = outputs
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise AssertionError("LSTM.forward must return the final state as a pair (h, c)")
    return log_probas, state


def test_forward_values(sub, snapshot):
    inputs = _inputs(3, 9)
    model = _model(sub)
    with torch.no_grad():
        log_probas, _ = _forward(model, inputs, model.initial_states(3))
    assert_shape(log_probas, (3, 9, V), "log_probas")
    snapshot.check("log_probas", log_probas, hint=FORWARD_HINT)


def test_forward_returns_log_probabilities(sub):
    inputs = _inputs(2, 7)
    model = _model(sub)
    with torch.no_grad():
        log_probas, _ = _forward(model, inputs, model.initial_states(2))
    assert_shape(log_probas, (2, 7, V), "log_probas")
    total = torch.logsumexp(log_probas.double(), dim=-1)
    error = total.abs().max().item()
    if error > 1e-4:
        raise AssertionError(
            f"forward must return log-probabilities (log_softmax over the vocabulary), not "
            f"logits or probabilities: logsumexp over the vocabulary is off from 0 by up to {error:.3g}."
        )


def test_forward_final_hidden_state(sub, snapshot):
    inputs = _inputs(3, 8)
    h0 = 0.5 * torch.randn(1, 3, H)
    c0 = 0.5 * torch.randn(1, 3, H)
    model = _model(sub)
    with torch.no_grad():
        log_probas, (h, c) = _forward(model, inputs, (h0, c0))
    assert_shape(h, (1, 3, H), "h")
    assert_shape(c, (1, 3, H), "c")
    hint = "Start the LSTM from the given hidden_states and return the state it ends in."
    snapshot.check("log_probas", log_probas, hint=hint)
    snapshot.check("h", h, hint=hint)
    snapshot.check("c", c, hint=hint)


def test_forward_two_layers_and_continuation(sub, snapshot):
    inputs = _inputs(2, 10)
    model = _model(sub, num_layers=2)
    with torch.no_grad():
        log_probas, (h, c) = _forward(model, inputs, model.initial_states(2))
        # Running the sequence in two halves, carrying the state, must give the same result.
        first, state = _forward(model, inputs[:, :4], model.initial_states(2))
        second, (h2, c2) = _forward(model, inputs[:, 4:], state)
    assert_shape(h, (2, 2, H), "h (num_layers=2)")
    snapshot.check("log_probas", log_probas, hint=FORWARD_HINT)
    snapshot.check("h", h)
    snapshot.check("c", c)
    hint = (
        "Feeding the second half of a sequence with the state returned after the first half "
        "must continue the sequence."
    )
    assert_close(torch.cat([first, second], dim=1), log_probas.double(), "log_probas in two halves", hint=hint)
    assert_close(h2, h.double(), "h after two halves", hint=hint)
    assert_close(c2, c.double(), "c after two halves", hint=hint)


def _padded_batch(vocabulary_size):
    """Sequences of very different lengths; the padding carries extreme log-probabilities."""
    lengths = [16, 1, 5, 11]
    mask = padded_mask(lengths, 16)
    log_probas = torch.log_softmax(2.0 * torch.randn(4, 16, vocabulary_size), dim=-1)
    targets = torch.randint(1, vocabulary_size, (4, 16))
    targets[mask == 0] = 0  # the data set pads targets with 0
    # Make padding expensive: averaging over it (or counting it) changes the loss a lot.
    log_probas[..., 0] = torch.where(mask == 0, torch.tensor(-30.0), log_probas[..., 0])
    return log_probas, targets, mask


def test_loss_values_padded(sub, snapshot):
    log_probas, targets, mask = _padded_batch(V)
    model = sub.lstm.LSTM(V, E, H, 1)
    loss = model.loss(log_probas, targets, mask)
    assert_shape(loss, (), "loss")
    if abs(float(loss.detach()) - float(token_mean_nll_f64(log_probas, targets, mask))) < 1e-4:
        raise AssertionError(
            "LSTM.loss is the mean NLL over all real tokens of the batch. " + LOSS_HINT
        )
    assert_close(loss, sequence_mean_nll_f64(log_probas, targets, mask), "loss", hint=LOSS_HINT)
    snapshot.check("loss", loss, hint=LOSS_HINT)


def test_loss_ignores_padding(sub):
    log_probas, targets, mask = _padded_batch(V)
    model = sub.lstm.LSTM(V, E, H, 1)
    loss = model.loss(log_probas, targets, mask)
    other_log_probas = torch.where(mask[..., None] == 0, torch.log_softmax(torch.randn_like(log_probas), -1), log_probas)
    other_targets = torch.where(mask == 0, torch.randint_like(targets, V), targets)
    other = model.loss(other_log_probas, other_targets, mask)
    if abs(float(loss) - float(other)) > 1e-5:
        raise AssertionError(
            "LSTM.loss changes when only padded positions (mask == 0) change: padding must "
            "not count. " + LOSS_HINT
        )


def test_loss_full_mask_is_mean_nll(sub):
    log_probas = torch.log_softmax(torch.randn(3, 6, V), dim=-1).requires_grad_()
    targets = torch.randint(1, V, (3, 6))
    mask = torch.ones(3, 6)
    model = sub.lstm.LSTM(V, E, H, 1)
    loss = model.loss(log_probas, targets, mask)
    assert_shape(loss, (), "loss")
    expected = -log_probas.detach().double().gather(-1, targets[..., None]).mean()
    assert_close(loss, expected, "loss with no padding", hint="Without padding the loss is the mean NLL of the targets.")
    loss.backward()
    if log_probas.grad is None or not torch.isfinite(log_probas.grad).all():
        raise AssertionError("LSTM.loss must be differentiable with respect to log_probas (no .item() or numpy inside).")
