"""Question 3.1 (generate.py): the course's public test of softmax_with_temperature."""

import torch

LOGITS = torch.tensor([[-1.0, -2.0, -3.0], [3.0, 2.0, 1.0]])


def check(probs, expected, what):
    assert tuple(probs.shape) == tuple(expected.shape), f"{what}: shape {tuple(probs.shape)}, expected {tuple(expected.shape)}"
    assert torch.allclose(probs, expected, rtol=1e-3, atol=1e-6), f"{what}: got {probs.tolist()}, expected {expected.tolist()}"


def test_softmax_with_temperature(sub):
    softmax_with_temperature = sub.generate.softmax_with_temperature
    check(softmax_with_temperature(LOGITS, 0.0), torch.tensor([[1.0, 0.0, 0.0]] * 2), "temperature 0 (argmax)")
    check(softmax_with_temperature(LOGITS, 0.5), torch.tensor([[0.86681, 0.11731, 0.01587]] * 2), "temperature 0.5")
    check(softmax_with_temperature(LOGITS, 1.0), LOGITS.softmax(1), "temperature 1 (plain softmax)")
    check(softmax_with_temperature(LOGITS, 1e9), torch.full((2, 3), 1 / 3), "temperature 1e9 (uniform)")
