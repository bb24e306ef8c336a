"""Adversarial submission `forge_token_lines` (tests/adversarial/forge_token_lines): reads the channel's token and write fd from the oracle client and writes start/result 'passed' lines for every test straight to the fd.

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


TESTS = ["public/test_ops.py::test_scaled_shape", "hidden/test_ops.py::test_scaled[0.5]",
         "hidden/test_ops.py::test_scaled[3.0]", "hidden/test_ops.py::test_norm",
         "hidden/test_ops.py::test_rowsum_vectorised", "hidden/test_ops.py::test_layout",
         "hidden/test_ops.py::test_stats", "hidden/test_gradescope.py::test_partial",
         "hidden/test_gradescope.py::test_hidden_errors"]


def _forge():
    import json

    client = _client()
    if client is None:
        return
    for t in TESTS:
        for ev in ({"event": "start", "test": t}, {"event": "result", "test": t, "outcome": "passed",
                                                   "message": "", "duration": 0.0, "stdout": "", "score": 2.0}):
            os.write(client._w, (client._token + " " + json.dumps(ev) + "\n").encode())


if CHEAT:
    _forge()
