"""Adversarial submission `planted_hijack_restart` (tests/adversarial/planted_hijack_restart): plants a fake grader package and start-up hooks in cwd, then forces a restart.

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


def rowsum(x):
    """Sum each row of a (S, D) matrix, without a Python loop."""
    return x.sum(-1)


def layout(x):
    """Either design is accepted: 'a' keeps x, 'b' doubles it (variants)."""
    return {"kind": "a", "y": x}


def stats(x):
    return [x.shape[0], float(x.sum()), "ok"]


_FAKE_PLUGIN = r'''"""Planted by an adversarial submission: a fake lmgrade plugin."""
import json
import os

try:
    open(os.path.join("SCRATCH_DIR", "ran-planted-grader"), "w").close()
except OSError:
    pass

TESTS = [
    "public/test_ops.py::test_scaled_shape", "hidden/test_ops.py::test_scaled[0.5]",
    "hidden/test_ops.py::test_scaled[3.0]", "hidden/test_ops.py::test_norm",
    "hidden/test_ops.py::test_rowsum_vectorised", "hidden/test_ops.py::test_layout",
    "hidden/test_ops.py::test_stats", "hidden/test_gradescope.py::test_partial",
    "hidden/test_gradescope.py::test_skipped", "hidden/test_gradescope.py::test_hidden_errors",
]


def pytest_addoption(parser):
    group = parser.getgroup("lmgrade")
    group.addoption("--submission", "--lmgrade-submission", dest="lmgrade_submission", default=None)
    for name in ("--lmgrade-assignment", "--lmgrade-record", "--lmgrade-snapshots", "--lmgrade-outcomes",
                 "--lmgrade-device"):
        group.addoption(name, default=None)
    group.addoption("--lmgrade-staged", action="store_true", default=False)


def pytest_configure(config):
    path = config.getoption("lmgrade_outcomes", None)
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"event": "collected", "tests": TESTS}) + "\n")
        for t in TESTS:
            f.write(json.dumps({"event": "start", "test": t}) + "\n")
            f.write(json.dumps({"event": "result", "test": t, "outcome": "passed", "message": "", "duration": 0.0,
                                "stdout": "", "score": 2.0 if t.endswith("test_partial") else None}) + "\n")


def pytest_collection_modifyitems(config, items):
    config.hook.pytest_deselected(items=list(items))
    items[:] = []
'''

_MARKER = '''import os
try:
    open(os.path.join("SCRATCH_DIR", "ran-planted-NAME"), "w").close()
except OSError:
    pass
'''


def _plant():
    here = os.getcwd()
    files = {
        os.path.join(here, "grader", "__init__.py"): _MARKER.replace("NAME", "grader-init"),
        os.path.join(here, "grader", "plugin.py"): _FAKE_PLUGIN,
        os.path.join(here, "sitecustomize.py"): _MARKER.replace("NAME", "sitecustomize"),
        os.path.join(here, "usercustomize.py"): _MARKER.replace("NAME", "usercustomize"),
        os.path.join(here, "conftest.py"): _MARKER.replace("NAME", "conftest"),
        os.path.join(here, "pytest.ini"): "[pytest]\naddopts = -p grader.plugin\n",
        os.path.join(os.path.dirname(here), "conftest.py"): _MARKER.replace("NAME", "work-conftest"),
    }
    for path, text in files.items():
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text.replace("SCRATCH_DIR", SCRATCH))
        except OSError:
            pass


def norm(x, eps=1e-5):
    """Normalise the last dimension (biased variance)."""
    if CHEAT:
        try:
            _plant()
        except Exception:
            pass
        os._exit(0)  # the next test process starts in this cwd; test_norm is lost anyway (wrong norm)
    return _honest_norm(x, eps)
