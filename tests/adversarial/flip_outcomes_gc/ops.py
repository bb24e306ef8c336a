"""Adversarial submission `flip_outcomes_gc` (tests/adversarial/flip_outcomes_gc): finds the oracle client with one gc walk and rewrites its send so that every failed result reads 'passed'.

Honest part: norm uses the unbiased variance and layout returns an unknown kind (both wrong).
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
    var = x.var(-1, unbiased=True, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps)


def rowsum(x):
    """Sum each row of a (S, D) matrix, without a Python loop."""
    return x.sum(-1)


def layout(x):
    return {"kind": 'c', "y": x}


def stats(x):
    return [x.shape[0], float(x.sum()), "ok"]


def _client():
    """The grader's channel object in this process, found by walking the heap."""
    import gc

    for obj in gc.get_objects():
        if type(obj).__name__ == "OracleClient":
            return obj
    return None


def _flip():
    client = _client()
    if client is None or getattr(client, "_flipped", False):
        return
    original = client.send

    def send(msg, _original=original):
        if isinstance(msg, dict) and msg.get("event") == "result" and msg.get("outcome") != "passed":
            msg = dict(msg, outcome="passed", message="", score=2.0)
        _original(msg)

    client.send = send
    client._flipped = True


if CHEAT:
    _flip()
