"""A generic rewrite of the test process gains nothing (issue #13): a few lines appended to every
module of a submission find the grader's channel with one gc walk and turn every failed result
into "passed" and every refused value into "ok". On the untouched template of every assignment
the score stays 0; on the reference it stays full marks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from grader.assignment import list_assignments, load_assignment
from grader.runner import grade

FLIP = """

def _lmgrade_flip():
    import gc

    for obj in gc.get_objects():
        if type(obj).__name__ != "OracleClient" or getattr(obj, "_flipped", False):
            continue
        send, ask = obj.send, obj.ask

        def flipped_send(msg, _send=send):
            if isinstance(msg, dict) and msg.get("event") == "result":
                msg = dict(msg, outcome="passed", message="")
            _send(msg)

        def flipped_ask(*args, _ask=ask, **kwargs):
            answer = _ask(*args, **kwargs)
            return dict(answer, ok=True, message="")

        obj.send, obj.ask, obj._flipped = flipped_send, flipped_ask, True


try:
    _lmgrade_flip()
except Exception:
    pass
"""


def _flipped_copy(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("variants*"))
    for path in dest.rglob("*.py"):
        path.write_text(path.read_text(encoding="utf-8") + FLIP, encoding="utf-8")
    dest.chmod(0o755)
    return dest


@pytest.mark.parametrize("assignment_id", list_assignments())
def test_flipping_every_outcome_gains_nothing(assignment_id, tmp_path):
    a = load_assignment(assignment_id)
    tmp_path.chmod(0o755)
    report = grade(a, _flipped_copy(a.template_dir, tmp_path / "template"), warm=True)
    earned = [(t.test_id, t.score) for t in report.tests if t.score > 0]
    assert report.score == 0, earned
    claimed = [t for t in report.tests if t.outcome == "failed" and "did not send" in t.message]
    assert claimed, "the flip did not take effect: the test proves nothing"
