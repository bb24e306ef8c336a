"""The warm grader (grader.warm): the same grades as a cold start, nothing carried between runs,
and a cold start, with a note, when forking is not possible."""

from __future__ import annotations

import shutil
from pathlib import Path

from grader import warm
from grader.runner import grade

POISON = """
import torch as _torch
import sys as _sys
_sys.modules["torch"].lmgrade_poisoned = True
_torch.add = lambda *a, **k: _torch.zeros(1)  # replaced in this process only
"""


def _summary(report):
    return [(t.test_id, t.outcome, t.score, t.evidence_score) for t in report.tests]


def test_warm_and_cold_grade_alike(toy, tmp_path):
    folder = tmp_path / "mutant"
    shutil.copytree(toy.reference_dir, folder, ignore=shutil.ignore_patterns("variants"))
    text = (folder / "ops.py").read_text()
    (folder / "ops.py").write_text(text.replace("unbiased=False", "unbiased=True"))
    cold, hot = grade(toy, folder, warm=False), grade(toy, folder, warm=True)
    assert _summary(cold) == _summary(hot)
    assert cold.score < cold.max_score
    assert not any("warm grader" in n for n in hot.notes), hot.notes


def test_nothing_of_one_run_reaches_the_next(toy, tmp_path):
    """A submission that rewrites torch at import in its (forked) process leaves the warm server
    untouched: the next run starts from the same pristine state."""
    poisoned = tmp_path / "poisoned"
    shutil.copytree(toy.reference_dir, poisoned, ignore=shutil.ignore_patterns("variants"))
    (poisoned / "ops.py").write_text(POISON + (poisoned / "ops.py").read_text())
    grade(toy, poisoned, warm=True)
    clean = grade(toy, toy.reference_dir, warm=True)
    assert clean.score == clean.max_score, [(t.test_id, t.message) for t in clean.tests if not t.passed]


def test_an_unsafe_warm_server_falls_back_to_a_cold_start(toy, monkeypatch):
    class Unsafe:
        def spawn(self, *args, **kwargs):
            raise warm.WarmUnavailable("the warm process has 3 threads after its imports: forking is unsafe")

    monkeypatch.setattr(warm, "server_for", lambda *a, **k: Unsafe())
    report = grade(toy, toy.reference_dir, warm=True)
    assert report.score == report.max_score
    assert any("started cold" in n and "3 threads" in n for n in report.notes), report.notes


def test_the_warm_server_holds_no_run_secret(toy):
    """The server is started with the plain child environment: no run token, no snapshot path."""
    grade(toy, toy.reference_dir, warm=True)
    servers = list(warm._SERVERS.values())
    assert servers, "no warm server was started"
    for server in servers:
        env = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
        assert not any(e.startswith(b"LMGRADE_RUN=") for e in env)
        cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
        assert b"snapshots" not in cmdline and b"--lmgrade-oracle" not in cmdline
