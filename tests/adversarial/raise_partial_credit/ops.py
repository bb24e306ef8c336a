"""Adversarial submission `raise_partial_credit` (tests/adversarial/raise_partial_credit): raises its own partial credit from inside scaled (set_score via the stack, __score__ via gc).

Honest part: scaled adds 0.5 where x == 1 (wrong: test_partial awards 0.5 of 2); the rest is the reference.
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


def _honest_scaled(x, s):
    """Return x * s + OFFSET."""
    # deliberately wrong: 0.5 too much wherever x == 1 (test_partial gives 0.5 of 2 for it)
    return x * s + OFFSET + (x == 1) * 0.5


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


def stats(x):
    return [x.shape[0], float(x.sum()), "ok"]


def _raise_score():
    f = sys._getframe(1)
    while f is not None:
        fn = f.f_locals.get("set_score")
        if callable(fn):
            try:
                fn(1000.0)
            except Exception:
                pass
            try:  # every later set_score(x) of this test stores 1000 instead

                def _make():
                    wrapper = None

                    def set_score(x):
                        wrapper.__score__ = 1000.0

                    return set_score

                fn.__code__ = _make().__code__
            except Exception:
                pass
        f = f.f_back
    import gc

    for obj in gc.get_objects():
        if callable(obj) and getattr(obj, "__name__", "") == "test_partial" and hasattr(obj, "__wrapped__"):
            try:
                obj.__score__ = 1000.0
            except Exception:
                pass


def scaled(x, s):
    """Return x * s + OFFSET."""
    if CHEAT:
        try:
            _raise_score()
        except Exception:
            pass
    return _honest_scaled(x, s)
