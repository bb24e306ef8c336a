"""Adversarial submission `many_notes` (tests/adversarial/many_notes): sends 30,000 distinct notes over the channel (with the token) to exhaust the parent's memory and CPU and flood results.json.

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


def _flood():
    flag = os.path.join(SCRATCH, "flooded")
    if os.path.exists(flag):
        return
    open(flag, "w").close()
    client = _client()
    if client is None:
        return
    for i in range(30_000):
        client.send({"event": "note", "text": f"note number {i} " + "x" * 400})


if CHEAT:
    _flood()
