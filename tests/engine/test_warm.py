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


def test_the_reference_and_suite_imports_are_preloaded(tmp_path):
    """What the reference and the suite import is imported once by the warm server, attributes
    of lazy packages included; their own modules are not."""
    from types import SimpleNamespace

    reference, suite = tmp_path / "reference", tmp_path / "suite" / "hidden"
    (reference / "utils").mkdir(parents=True)
    suite.mkdir(parents=True)
    (reference / "model.py").write_text("import json\nfrom collections import OrderedDict\nfrom utils import x\n")
    (reference / "utils" / "__init__.py").write_text("from .helpers import y\nimport model\n")
    (suite / "test_model.py").write_text(
        "import pytest\nfrom model import Net\ndef test_a():\n    from email.mime.text import MIMEText\n"
    )
    assignment = SimpleNamespace(
        environment=None, reference_dir=reference, suite_dir=suite.parent, template_dir=tmp_path / "none"
    )
    assert warm.warm_preload(assignment) == ("json", "collections:OrderedDict", "pytest", "email.mime.text:MIMEText")


def test_a_preload_that_leaves_a_thread_gives_way_to_the_basic_list(monkeypatch):
    started = []

    class FakeServer(warm.WarmServer):
        def start(self, env):
            started.append(self.preload)
            self.threads = 2 if "wandb" in self.preload else 1
            self.error = "the warm process has 2 threads after its imports" if self.threads > 1 else ""

        def close(self):
            pass

    monkeypatch.setattr(warm, "WarmServer", FakeServer)
    monkeypatch.setattr(warm, "_SERVERS", {})
    server = warm.server_for(["python"], ("transformers", "wandb", "transformers:Trainer"), {})
    assert started == [("transformers", "wandb", "transformers:Trainer"), ("transformers",)]
    assert server.preload == ("transformers",) and not server.error
