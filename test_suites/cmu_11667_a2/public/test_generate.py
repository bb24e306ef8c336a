"""Question 3.1 (generate.py): the course's public test of softmax_with_temperature. The
probabilities are compared with the reference's by the grader; the asserts explain a failure."""

import pytest
import torch

LOGITS = torch.tensor([[-1.0, -2.0, -3.0], [3.0, 2.0, 1.0]])
CASES = [
    (0.0, "temperature 0 (argmax)"),
    (0.5, "temperature 0.5"),
    (1.0, "temperature 1 (plain softmax)"),
    (1e9, "temperature 1e9 (uniform)"),
]
EXPECTED = {
    0.0: torch.tensor([[1.0, 0.0, 0.0]] * 2),
    0.5: torch.tensor([[0.86681, 0.11731, 0.01587]] * 2),
    1.0: LOGITS.softmax(1),
    1e9: torch.full((2, 3), 1 / 3),
}


def test_softmax_with_temperature(sub, snapshot):
    softmax_with_temperature = sub.generate.softmax_with_temperature
    for temperature, what in CASES:
        probs = softmax_with_temperature(LOGITS, temperature)
        if not isinstance(probs, torch.Tensor):
            pytest.fail(
                "softmax_with_temperature returned "
                f"{'`...`' if probs is Ellipsis else type(probs).__name__}, "
                "expected a tensor of probabilities",
                pytrace=False,
            )
        expected = EXPECTED[temperature]
        assert tuple(probs.shape) == tuple(expected.shape), (
            f"{what}: shape {tuple(probs.shape)}, expected {tuple(expected.shape)}"
        )
        assert torch.allclose(probs, expected, rtol=1e-3, atol=1e-6), (
            f"{what}: got {probs.tolist()}, expected {expected.tolist()}"
        )
        snapshot.check(f"T={temperature:g}", probs, rtol=1e-3, atol=1e-6)
