"""Adversarial submission `fork_bomb` (tests/adversarial/fork_bomb): a (capped) fork bomb inside norm.

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


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _starttime(pid):
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, ValueError, IndexError):
        return 0


def _record_pid(pid, label):
    """Leave the pid where the test looks (SCRATCH) and in the captured output."""
    line = f"{pid} {_starttime(pid)}"
    try:
        with open(os.path.join(SCRATCH, f"pids-{label}.txt"), "a") as f:
            f.write(line + "\n")
    except OSError:
        pass
    return line


def _proc_chain():
    """This process and its ancestors: (pid, argv, cwd); unreadable entries are left empty."""
    out, pid = [], os.getpid()
    for _ in range(8):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            argv = []
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = None
        out.append((pid, argv, cwd))
        try:
            pid = int(_stat_fields(pid)[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
    return out


MAX_FORKS = 1000  # safety cap for this shared machine (pid_max is 32768), whatever the grader does
MAX_SECONDS = 10


def _fork_bomb():
    start = time.time()
    forked = 0
    while forked < MAX_FORKS and time.time() - start < MAX_SECONDS:
        try:
            pid = os.fork()
        except OSError:
            time.sleep(0.05)  # the process limit: keep trying
            continue
        if pid == 0:
            try:
                time.sleep(30)
            finally:
                os._exit(0)
        forked += 1
        _record_pid(pid, "forks")
    print(f"[adv] forked {forked} children")
    while time.time() - start < MAX_SECONDS:
        time.sleep(0.05)


def norm(x, eps=1e-5):
    """Normalise the last dimension (biased variance)."""
    if CHEAT:
        _fork_bomb()
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
