"""Adversarial submission `claim_visible` (tests/adversarial/claim_visible): sets __visibility__ = 'visible', a large __weight__, a __number__ and __tags__ on every hidden test function, to see hidden tests before the due date.

Honest part: the reference (every test right).
The test fills in CHEAT ("on"; "off" grades the honest part alone), SCRATCH and RESULTS.
"""
import os
import sys

import torch

from helper import OFFSET

CHEAT = "@@CHEAT@@" != "off"
SCRATCH = "@@SCRATCH@@"
RESULTS = "@@RESULTS@@"


def scaled(x, s):
    """Return x * s + OFFSET."""
    return x * s + OFFSET


def norm(x, eps=1e-5):
    """Normalise the last dimension."""
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps)


def rowsum(x):
    """Sum each row of a (S, D) matrix, without a Python loop."""
    return x.sum(-1)


def layout(x):
    return {"kind": 'a', "y": x}


def stats(x):
    return [x.shape[0], float(x.sum()), "ok"]


def _client():
    """The grader's channel object in this process, found by walking the heap."""
    import gc

    for obj in gc.get_objects():
        if type(obj).__name__ == "OracleClient":
            return obj
    return None


def _claim():
    import gc
    import types

    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and obj.__name__.startswith("test_") \
                and "/hidden/" in obj.__code__.co_filename:
            obj.__visibility__ = "visible"
            obj.__weight__ = 100.0
            obj.__number__ = "0.1"
            obj.__tags__ = ["claimed"]


if CHEAT:
    _claim()
