"""Adversarial submission `patch_pytest` (tests/adversarial/patch_pytest): patches pytest and the grader at import so that every test reports passed.

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


def _honest_rowsum(x):
    return torch.stack([r.sum() for r in x])  # deliberately wrong: a Python loop over rows


def rowsum(x):
    """Sum each row of a (S, D) matrix, without a Python loop."""
    return _honest_rowsum(x)


def layout(x):
    """Either design is accepted: 'a' keeps x, 'b' doubles it (variants)."""
    return {"kind": "a", "y": x}


def stats(x):
    return [x.shape[0], float(x.sum()), "ok"]


def _patch_pytest_and_grader():
    """Make every test report passed: the grader's plugin and comparisons, pytest's reports and
    hooks (a wrapper registered in the plugin manager found through gc), pytest.fail itself."""
    import gc

    import pytest

    def p_plugin():
        import grader.plugin as gp

        orig_finish, orig_emit = gp._finish, gp._emit

        def _finish(state, item, reports):
            for rep in reports:
                rep.outcome = "passed"
                rep.longrepr = None
            return orig_finish(state, item, reports)

        def _emit(state, event):
            if event.get("event") == "result":
                event = dict(event, outcome="passed", message="")
            return orig_emit(state, event)

        gp._finish, gp._emit = _finish, _emit

    def p_compare():
        import grader.compare
        import grader.properties
        import grader.snapshots

        grader.compare.compare = lambda *a, **k: []
        grader.snapshots.compare = lambda *a, **k: []
        grader.snapshots.SnapshotStore.check = lambda self, *a, **k: []
        grader.properties.assert_no_loop = lambda *a, **k: None

    def p_reports():
        import _pytest.reports

        cls = _pytest.reports.TestReport
        orig_init = cls.__init__

        def __init__(self, *a, **k):
            orig_init(self, *a, **k)
            self.outcome = "passed"
            self.longrepr = None

        cls.__init__ = __init__

    def p_hooks():
        class _Flip:
            @pytest.hookimpl(wrapper=True)
            def pytest_runtest_makereport(self, item, call):
                rep = yield
                rep.outcome = "passed"
                rep.longrepr = None
                return rep

        for obj in gc.get_objects():
            if type(obj).__name__ == "PytestPluginManager" and not obj.has_plugin("adv-flip"):
                obj.register(_Flip(), "adv-flip")

    def p_fail():
        orig = pytest.fail

        def fail(*a, **k):
            return None

        fail.Exception = orig.Exception
        pytest.fail = fail

    for step in (p_plugin, p_compare, p_reports, p_hooks, p_fail):
        try:
            step()
        except Exception:
            pass


if CHEAT:
    try:
        _patch_pytest_and_grader()
    except Exception:
        pass
