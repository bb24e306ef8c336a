"""A toy assignment for the engine's own tests."""
import torch

from helper import OFFSET


def scaled(x, s):
    """Return x * s + OFFSET."""
    # BEGIN SOLUTION
    return x * s + OFFSET
    # END SOLUTION


def norm(x, eps=1e-5):
    """Normalise the last dimension (biased variance)."""
    # BEGIN SOLUTION
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps)
    # END SOLUTION


def rowsum(x):
    """Sum each row of a (S, D) matrix, without a Python loop."""
    # BEGIN SOLUTION
    return x.sum(-1)
    # END SOLUTION


def layout(x):
    """Either design is accepted: 'a' keeps x, 'b' doubles it (variants)."""
    # BEGIN SOLUTION
    return {"kind": "a", "y": x}
    # END SOLUTION


def stats(x):
    # BEGIN SOLUTION: return None
    return [x.shape[0], float(x.sum()), "ok"]
    # END SOLUTION
