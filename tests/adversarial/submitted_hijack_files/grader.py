"""Submitted grader.py: shadows the grader package and serves itself as `grader.plugin`, a plugin
that forges an all-passed outcome stream and runs no test."""
import json
import os
import sys

try:
    open(os.path.join("@@SCRATCH@@", "ran-grader.py"), "w").close()  # tells the test this file ran
except OSError:
    pass

__path__ = []  # pretend to be a package
sys.modules["grader.plugin"] = sys.modules[__name__]

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
