"""Adversarial submission `always_equal` (tests/adversarial/always_equal): stats returns objects that claim to equal anything.

Honest part: stats' sum is off by 0.25 (wrong) but its third item is 'ok' (right); the rest is the reference.
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


def norm(x, eps=1e-5):
    """Normalise the last dimension (biased variance)."""
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps)


def rowsum(x):
    """Sum each row of a (S, D) matrix, without a Python loop."""
    return x.sum(-1)


def layout(x):
    """Either design is accepted: 'a' keeps x, 'b' doubles it (variants)."""
    return {"kind": "a", "y": x}


def _always_equal(base):
    class Yes(base):
        def __eq__(self, other):
            return True

        def __ne__(self, other):
            return False

        __hash__ = base.__hash__ if base is not list else None

    Yes.__name__ = f"Always{base.__name__.title()}"
    return Yes


_Int, _Float, _Str = _always_equal(int), _always_equal(float), _always_equal(str)


class _List(list):
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = None


def stats(x):
    honest = [x.shape[0], float(x.sum()) + 0.25, "ok"]  # deliberately wrong: the sum is off by 0.25
    if not CHEAT:
        return honest
    return _List([_Int(honest[0]), _Float(honest[1]), _Str(honest[2])])
