"""Adversarial submission `loop_ignoring_signals` (tests/adversarial/loop_ignoring_signals): ignores the timeout signals, then sleeps in a loop inside norm.

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
        import signal

        for sig in ("SIGALRM", "SIGTERM", "SIGINT", "SIGHUP", "SIGXCPU", "SIGUSR1", "SIGUSR2"):
            try:
                signal.signal(getattr(signal, sig), signal.SIG_IGN)
            except Exception:
                pass
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)  # pytest-timeout's alarm
        except Exception:
            pass
        deadline = time.monotonic() + 60  # "forever" for any grader; bounded for the machine
        while time.monotonic() < deadline:
            time.sleep(0.1)
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
