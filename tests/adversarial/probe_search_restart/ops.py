"""Adversarial submission `probe_search_restart` (tests/adversarial/probe_search_restart): at import, announces a later hidden test and sends NaN probes of its key, asking again and again to read hidden values one error magnitude at a time.

Honest part: norm uses the unbiased variance (wrong); the rest is the reference.
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


def _probe():
    flag = os.path.join(SCRATCH, "probed")
    if os.path.exists(flag):
        return  # once per grading: the restarted test process does not probe again
    open(flag, "w").close()
    client = _client()
    if client is None:
        return
    target = "hidden/test_ops.py::test_norm"
    answers = []
    for i in range(40):
        client.send({"event": "start", "test": target})
        probe = torch.full((4, 8), float("nan"))
        probe.view(-1)[i % 32] = 0.0
        from grader.values import encode

        tree, arrays = encode(probe)
        try:
            answers.append(client.ask(target, "y", tree, arrays).get("message", ""))
        except Exception:
            break
    with open(os.path.join(SCRATCH, "answers.txt"), "w") as f:
        f.write("\n".join(answers))


if CHEAT:
    _probe()
