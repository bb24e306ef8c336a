"""Question 3.4 (classify.py): the course's public test of classify_binary_sentiment, with
tokens_of_interest given as a LongTensor as the course passes it. The predictions are compared
with the reference's by the grader; the asserts explain a failure."""

import pytest
import torch

# 3 texts x 6 tokens; each case compares (negative token, positive token)
LOGITS = torch.tensor(
    [
        [0.0, 1.0, 2.0, 1.0, 1.0, 0.0],
        [2.0, 2.0, 1.0, 0.0, 0.0, 0.0],
        [1.0, 0.0, 3.0, 0.0, 2.0, 0.0],
    ]
)
CASES = [([1, 2], [1, 0, 1]), ([2, 1], [0, 1, 0]), ([0, 4], [1, 0, 1]), ([0, 3], [1, 0, 0])]


def test_classify_sentiment(sub, snapshot):
    for tokens, expected in CASES:
        got = sub.classify.classify_binary_sentiment(LOGITS, torch.LongTensor(tokens))
        if not isinstance(got, list):
            pytest.fail(
                "classify_binary_sentiment must return a Python list, got "
                f"{'`...`' if got is Ellipsis else type(got).__name__}",
                pytrace=False,
            )
        assert got == expected, (
            f"tokens_of_interest={tokens} (negative, positive): predicted {got}, expected "
            f"{expected}; "
            "predict 1 where the positive token is the more likely of the two"
        )
        snapshot.check(f"tokens_{tokens[0]}_{tokens[1]}", got)
