"""Question 3.4 (classify.py): the course's public test of classify_binary_sentiment, with
tokens_of_interest given as a LongTensor as the course passes it."""

import torch

# 3 texts x 6 tokens; each case compares (negative token, positive token)
LOGITS = torch.tensor([
    [0.0, 1.0, 2.0, 1.0, 1.0, 0.0],
    [2.0, 2.0, 1.0, 0.0, 0.0, 0.0],
    [1.0, 0.0, 3.0, 0.0, 2.0, 0.0],
])
CASES = [([1, 2], [1, 0, 1]), ([2, 1], [0, 1, 0]), ([0, 4], [1, 0, 1]), ([0, 3], [1, 0, 0])]


def test_classify_sentiment(sub):
    for tokens, expected in CASES:
        got = sub.classify.classify_binary_sentiment(LOGITS, torch.LongTensor(tokens))
        assert isinstance(got, list), f"classify_binary_sentiment must return a Python list, got {type(got).__name__}"
        assert got == expected, (
            f"tokens_of_interest={tokens} (negative, positive): predicted {got}, expected {expected}; "
            "predict 1 where the positive token is the more likely of the two"
        )
