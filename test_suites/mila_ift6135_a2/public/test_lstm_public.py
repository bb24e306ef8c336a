"""Public shape tests for lstm_solution.py, as the course's tests_lstm_public.py checks them.

They check input/output shapes on random inputs only; values are graded by hidden tests.
"""
import torch

V, E, H, L = 11, 13, 17, 3  # vocabulary, embedding, hidden size, layers
B, S = 5, 7


def _shape_error(name, value, shape):
    if not isinstance(value, torch.Tensor):
        return f"{name} should be a tensor of shape {shape}, got {type(value).__name__}"
    if tuple(value.shape) != shape:
        return f"{name} has shape {tuple(value.shape)}, expected {shape}"
    return None


def test_forward_shape(sub):
    model = sub.lstm.LSTM(V, E, H, L)
    inputs = torch.randint(0, V, (B, S))
    outputs = model(inputs, model.initial_states(B))
    assert isinstance(outputs, (tuple, list)) and len(outputs) == 2, \
        "LSTM.forward should return a pair (log_probas, hidden_states)"
    log_probas, hidden_states = outputs
    error = _shape_error("log_probas", log_probas, (B, S, V))
    assert error is None, error
    assert isinstance(hidden_states, (tuple, list)) and len(hidden_states) == 2, \
        "the hidden state returned by LSTM.forward should be a pair (h, c)"
    for name, state in zip("hc", hidden_states):
        error = _shape_error(name, state, (L, B, H))
        assert error is None, error


def test_loss_shape(sub):
    model = sub.lstm.LSTM(V, E, H, L)
    log_probas = torch.log_softmax(torch.randn(B, S, V), dim=-1)
    targets = torch.randint(0, V, (B, S))
    mask = torch.randint(0, 2, (B, S)).float()
    mask[:, 0] = 1.0  # every sequence has at least one real token
    loss = model.loss(log_probas, targets, mask)
    error = _shape_error("loss", loss, ())
    assert error is None, error
