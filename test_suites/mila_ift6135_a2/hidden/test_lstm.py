"""Problem 1 (lstm_solution.py): LSTM.forward (question 1) and LSTM.loss (question 2).

Every point is decided by the grading parent from what the tests send: values compared with
the reference's (the models' parameters are set by name, and the provided __init__ names them),
and properties judged by the rules of ../judges.py next to such a value.
"""
import torch
from mila_checks import assert_shape, fill_parameters, nll_mistakes, padded_mask

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
CONTINUATION_HINT = (
    "Feeding the second half of a sequence with the state returned after the first half "
    "must continue the sequence."
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
        raise AssertionError("LSTM.forward must return a pair (log_probas, (h, c))"
                             + (" (not implemented yet?)" if outputs is None or outputs is Ellipsis else ""))
    log_probas, state = outputs
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise AssertionError("LSTM.forward must return the final state as a pair (h, c)")
    return log_probas, state


# -- question 1: forward ---------------------------------------------------------------------

def test_forward_values(sub, snapshot):
    inputs = _inputs(3, 9)
    model = _model(sub)
    with torch.no_grad():
        log_probas, _ = _forward(model, inputs, model.initial_states(3))
    assert_shape(log_probas, (3, 9, V), "log_probas")
    snapshot.check("log_probas", log_probas, hint=FORWARD_HINT)


def test_forward_returns_log_probabilities(sub, snapshot):
    inputs = _inputs(2, 7)
    model = _model(sub)
    with torch.no_grad():
        log_probas, _ = _forward(model, inputs, model.initial_states(2))
    assert_shape(log_probas, (2, 7, V), "log_probas")
    snapshot.judge("normalised", log_probas, "log_probabilities", what="LSTM.forward's log_probas")
    snapshot.check("log_probas", log_probas, hint=FORWARD_HINT)


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
    assert_shape(first, (2, 4, V), "log_probas of the first half")
    assert_shape(second, (2, 6, V), "log_probas of the second half")
    snapshot.check("log_probas", log_probas, hint=FORWARD_HINT)
    snapshot.check("h", h)
    snapshot.check("c", c)
    snapshot.check("log_probas_in_two_halves", torch.cat([first, second], dim=1), hint=CONTINUATION_HINT)
    snapshot.check("h_after_two_halves", h2, hint=CONTINUATION_HINT)
    snapshot.check("c_after_two_halves", c2, hint=CONTINUATION_HINT)


# -- question 2: loss ------------------------------------------------------------------------

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


def _loss(model, log_probas, targets, mask):
    loss = model.loss(log_probas, targets, mask)
    assert_shape(loss, (), "loss")
    return loss


def test_loss_values_padded(sub, snapshot):
    log_probas, targets, mask = _padded_batch(V)
    model = sub.lstm.LSTM(V, E, H, 1)
    loss = _loss(model, log_probas, targets, mask)
    snapshot.judge("loss", loss, "loss_value", mistakes=nll_mistakes(log_probas, targets, mask),
                   what="LSTM.loss", hint=LOSS_HINT)


def test_loss_ignores_padding(sub, snapshot):
    # every input is drawn before any submission code runs
    full_log_probas = torch.log_softmax(torch.randn(4, 16, V), dim=-1)
    full_targets = torch.randint(1, V, (4, 16))
    log_probas, targets, mask = _padded_batch(V)
    other_log_probas = torch.where(mask[..., None] == 0, torch.log_softmax(torch.randn_like(log_probas), -1), log_probas)
    other_targets = torch.where(mask == 0, torch.randint_like(targets, V), targets)
    model = sub.lstm.LSTM(V, E, H, 1)
    # The anchor: without padding, every correct mean of the NLL gives the same value.
    snapshot.check("loss_without_padding", _loss(model, full_log_probas, full_targets, torch.ones(4, 16)),
                   hint="Without padding the loss is the mean NLL of the targets.")
    loss = _loss(model, log_probas, targets, mask)
    snapshot.judge("loss_padded", loss, "finite")
    snapshot.judge("loss_padding_changed", _loss(model, other_log_probas, other_targets, mask), "same_as_earlier",
                   earlier="loss_padded", rtol=1e-5, atol=1e-5,
                   what="LSTM.loss before and after changing only padded positions (mask == 0)",
                   hint="padding must not count. " + LOSS_HINT)


def test_loss_full_mask_is_mean_nll(sub, snapshot):
    log_probas = torch.log_softmax(torch.randn(3, 6, V), dim=-1).requires_grad_()
    targets = torch.randint(1, V, (3, 6))
    mask = torch.ones(3, 6)
    model = sub.lstm.LSTM(V, E, H, 1)
    loss = _loss(model, log_probas, targets, mask)
    snapshot.check("loss", loss, hint="Without padding the loss is the mean NLL of the targets.")
    if not loss.requires_grad:
        raise AssertionError("LSTM.loss must be differentiable with respect to log_probas "
                             "(no .item(), numpy or detach inside).")
    loss.backward()
    snapshot.check("gradient", log_probas.grad,
                   hint="LSTM.loss must be differentiable with respect to log_probas (no .item() or numpy inside).")
