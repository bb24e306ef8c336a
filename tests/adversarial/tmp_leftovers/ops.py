"""Adversarial submission `tmp_leftovers` (tests/adversarial/tmp_leftovers): leaves files in /tmp, /var/tmp and /dev/shm, a channel to the next student graded on the same machine.

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


def _leave():
    tag = os.path.basename(SCRATCH)
    for folder in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            with open(os.path.join(folder, f"lmgrade-adv-left-{tag}"), "w") as f:
                f.write("a message for the next submission")
            os.makedirs(os.path.join(folder, f"lmgrade-adv-dir-{tag}", "inner"), exist_ok=True)
        except OSError:
            pass


if CHEAT:
    _leave()
