"""Adversarial submission `memory_bomb` (tests/adversarial/memory_bomb): a memory bomb inside norm.

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
        import mmap

        chunks = []
        try:
            while len(chunks) < 640:  # 64 GB of address space, never touched (costs no RAM)
                chunks.append(mmap.mmap(-1, 10**8, flags=mmap.MAP_PRIVATE))
            while len(chunks) < 640 + 20:  # then 2 GB of real memory (touched): capped for this machine
                chunks.append(b"\x01" * 10**8)
        except (MemoryError, OSError) as err:
            try:
                print(f"[adv] allocation failed after {len(chunks)} x 100 MB: {type(err).__name__}")
            except Exception:
                pass
            raise
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # both caps reached without a limit stopping us: hold it
            time.sleep(0.05)
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
