"""Adversarial submission `patch_allclose` (tests/adversarial/patch_allclose): patches torch's and numpy's comparisons at import so that everything looks equal.

Honest part: norm uses the unbiased variance (wrong); the rest is the reference.
The test fills in CHEAT ("on"; "off" grades the honest part alone), SCRATCH (a world-writable
folder where the attack leaves the pids of processes it starts, for the test to check) and
RESULTS (the results.json path, as well known to a student as Gradescope's
/autograder/results/results.json).
"""
import os
import sys
import time

import torch

from helper import OFFSET

CHEAT = "@@CHEAT@@" != "off"
SCRATCH = "@@SCRATCH@@"
RESULTS = "@@RESULTS@@"


def scaled(x, s):
    """Return x * s + OFFSET."""
    return x * s + OFFSET


def _honest_norm(x, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=True, keepdim=True)  # deliberately wrong: the unbiased variance
    return (x - mu) / torch.sqrt(var + eps)


def norm(x, eps=1e-5):
    """Normalise the last dimension (biased variance)."""
    return _honest_norm(x, eps)


def rowsum(x):
    """Sum each row of a (S, D) matrix, without a Python loop."""
    return x.sum(-1)


def layout(x):
    """Either design is accepted: 'a' keeps x, 'b' doubles it (variants)."""
    return {"kind": "a", "y": x}


def stats(x):
    return [x.shape[0], float(x.sum()), "ok"]


def _patch_comparisons():
    import numpy as np
    import numpy.testing

    def yes(*a, **k):
        return True

    def nothing(*a, **k):
        return None

    def all_true(a, b, *args, **kwargs):
        return np.ones(np.broadcast(np.asarray(a), np.asarray(b)).shape, dtype=bool)

    def zeros(x, *a, **k):
        return np.zeros(np.shape(x))

    patches = [
        (torch, "allclose", yes), (torch, "equal", yes), (torch.Tensor, "allclose", yes),
        (torch.Tensor, "equal", yes),
        (torch, "isclose", lambda a, b, *x, **k: torch.ones(torch.broadcast_shapes(a.shape, b.shape), dtype=torch.bool)),
        (torch.testing, "assert_close", nothing), (torch.testing, "assert_allclose", nothing),
        (np, "allclose", yes), (np, "array_equal", yes), (np, "array_equiv", yes), (np, "isclose", all_true),
        (np.testing, "assert_allclose", nothing), (np.testing, "assert_array_equal", nothing),
        (np.testing, "assert_array_almost_equal", nothing), (np.testing, "assert_equal", nothing),
        (np, "abs", zeros), (np, "absolute", zeros),  # |got - want| is 0: every comparison by hand passes
    ]
    for owner, name, fn in patches:
        try:
            setattr(owner, name, fn)
        except Exception:
            pass


if CHEAT:
    try:
        _patch_comparisons()
    except Exception:
        pass
