"""Adversarial submission `sys_exit_in_norm` (tests/adversarial/sys_exit_in_norm): sys.exit(0) inside norm.

Honest part: the reference (right) everywhere; norm never returns.
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
    if CHEAT:
        sys.exit(0)
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
