"""Secure grading: the oracle's rules, the uid drop, SIGTERM, and the parent's verdict.

The adversarial corpus (tests/test_adversarial.py) attacks the whole path; these tests pin the
pieces it relies on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from grader import sandbox
from grader.oracle import OracleServer, ProtocolError, pack_arrays, unpack_arrays
from grader.results import validate
from grader.runner import grade, score
from grader.snapshots import SnapshotStore
from grader.values import encode

needs_root = pytest.mark.skipif(not sandbox.is_root(), reason="the uid drop needs root (as on Gradescope and in CI)")


def _submission(toy, tmp_path: Path, name: str, replace: dict[str, str]) -> Path:
    folder = tmp_path / name
    shutil.copytree(toy.reference_dir, folder, ignore=shutil.ignore_patterns("variants"))
    text = (folder / "ops.py").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    (folder / "ops.py").write_text(text)
    return folder


@pytest.fixture
def server(toy):
    return OracleServer(SnapshotStore(toy.snapshots_dir), token="t0k")


def _check_msg(key, value):
    tree, arrays = encode(value)
    return {"event": "check", "key": key, "tree": tree, "arrays": pack_arrays(arrays)}


# -- the oracle ---------------------------------------------------------------------------------

def test_lines_without_the_token_are_ignored(server):
    assert server.parse(b'{"event": "result", "outcome": "passed"}') is None
    assert server.parse(b'other {"event": "result"}') is None
    assert server.parse(b't0k {"event": "start", "test": "x"}') == {"event": "start", "test": "x"}
    assert server.rejected == 2


def test_a_key_is_answered_once(server, toy):
    test = "hidden/test_ops.py::test_layout"
    first = server.check(test, _check_msg("kind", "zzz"))
    again = server.check(test, _check_msg("kind", "a"))  # the right answer, asked for a second time
    assert first["ok"] is False and again["ok"] is False and "already checked" in again["message"]
    assert server.verdict(test) is not None


def test_verdict_needs_every_recorded_key(server, toy):
    test = "hidden/test_ops.py::test_layout"
    assert "never received `kind`, `y`" in server.verdict(test)  # nothing checked: no pass
    assert server.check(test, _check_msg("kind", "a"))["ok"]
    assert "`y`" in server.verdict(test)


def test_hidden_answers_hold_no_expected_value(server, toy):
    test = "hidden/test_ops.py::test_stats"
    answer = server.check(test, _check_msg("stats", [3, 99.0, "ok"]))
    assert not answer["ok"] and "15" not in answer["message"]  # expected sum of arange(6) is 15


@pytest.mark.parametrize("spec, words", [
    ({"a": {"dtype": "object", "shape": [1], "data": ""}}, "dtype"),
    ({"a": {"dtype": "float32", "shape": [4], "data": "AAAA"}}, "does not match"),
    ({"a": {"dtype": "float32", "shape": [-1], "data": ""}}, "shape"),
    ([], "object"),
])
def test_arrays_from_the_child_are_checked(spec, words):
    with pytest.raises(ProtocolError, match=words):
        unpack_arrays(spec)


def test_arrays_round_trip():
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "m": np.array([True, False])}
    back = unpack_arrays(json.loads(json.dumps(pack_arrays(arrays))))
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in arrays.items())


def test_a_claimed_pass_without_evidence_scores_zero(toy, server):
    events = {"hidden/test_ops.py::test_stats": {"event": "result", "test": "hidden/test_ops.py::test_stats",
                                                   "outcome": "passed", "message": "", "stdout": ""}}
    report = score(toy, events, [], 0.0, "forged", oracle=server)
    t = next(t for t in report.tests if t.test_id == "hidden/test_ops.py::test_stats")
    assert t.score == 0 and t.outcome == "failed" and "never received `stats`" in t.message


# -- the whole path -------------------------------------------------------------------------------

@needs_root
def test_student_code_runs_as_its_own_uid(toy, tmp_path):
    folder = _submission(toy, tmp_path, "whoami", {
        '    return x * s + OFFSET\n': '    import os; print("UID", os.getuid(), "EUID", os.geteuid())\n    return x * s + OFFSET\n'})
    report = grade(toy, folder)
    printed = " ".join(t.stdout for t in report.tests if "UID" in t.stdout)
    uid = int(printed.split("UID", 1)[1].split()[0])
    assert uid in sandbox.UID_POOL and "EUID 0" not in printed
    assert report.score == report.max_score


@needs_root
def test_secrets_are_closed_to_the_child(toy):
    box = sandbox.open_sandbox("probe-test")
    try:
        paths = sandbox.secret_paths([toy.root])
        assert toy.snapshots_dir in paths and toy.reference_dir.parent in paths
        sandbox.protect(paths, box.uid)
        assert sandbox.probe_readable(paths, box.uid) == []
        assert sandbox.probe_readable([toy.suite_dir / "hidden" / "test_ops.py"], box.uid) != []
    finally:
        box.release()


def test_without_root_the_run_says_so(toy, monkeypatch):
    monkeypatch.setattr(sandbox, "is_root", lambda: False)
    report = grade(toy, toy.reference_dir)
    assert report.score == report.max_score
    assert any("not graded as root" in n for n in report.notes)


def test_trusted_and_secure_grading_agree(toy, tmp_path):
    wrong = _submission(toy, tmp_path, "wrong", {"unbiased=False": "unbiased=True"})
    for folder in (toy.reference_dir, wrong):
        secure, trusted = grade(toy, folder), grade(toy, folder, secure=False)
        assert [(t.test_id, t.score) for t in secure.tests] == [(t.test_id, t.score) for t in trusted.tests]
    assert secure.score == toy.total_points - 2  # test_norm lost


def test_sigterm_stops_the_run_and_keeps_a_valid_results_file(toy_root, tmp_path, toy):
    folder = _submission(toy, tmp_path, "hang", {
        "    mu = x.mean(-1, keepdim=True)\n": "    import time\n    time.sleep(600)\n    mu = x.mean(-1, keepdim=True)\n"})
    results = tmp_path / "results.json"
    env = {**os.environ, "LMGRADE_HOME": str(toy_root)}
    proc = subprocess.Popen([sys.executable, "-m", "grader", "grade", "toy", str(folder), "--results", str(results)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and not _running(results, "hidden/test_ops.py::test_norm"):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    data = json.loads(results.read_text())
    validate(data)
    assert "stopped (SIGTERM)" in data["output"], out.decode()[-2000:]
    by_id = {t["extra_data"]["test_id"]: t for t in data["tests"]}
    assert by_id["hidden/test_ops.py::test_scaled[0.5]"]["score"] > 0  # finished before the stop
    assert by_id["hidden/test_ops.py::test_norm"]["score"] == 0


def _running(results: Path, test_id: str) -> bool:
    """results.json is rewritten after every test: once the test before test_norm is in it,
    test_norm is the one running (the suite runs in file order)."""
    try:
        data = json.loads(results.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    done = {t["extra_data"]["test_id"]: t["extra_data"]["outcome"] for t in data.get("tests", [])}
    return done.get("hidden/test_ops.py::test_scaled[3.0]") == "passed" and done.get(test_id) == "not run"


def test_a_run_budget_stops_grading_and_scores_what_finished(toy, tmp_path):
    folder = _submission(toy, tmp_path, "slow", {
        "    mu = x.mean(-1, keepdim=True)\n": "    import time\n    time.sleep(600)\n    mu = x.mean(-1, keepdim=True)\n"})
    started = time.time()
    report = grade(toy, folder, budget=12)
    assert time.time() - started < 40
    by_id = {t.test_id: t for t in report.tests}
    assert by_id["hidden/test_ops.py::test_norm"].score == 0
    assert "time budget" in by_id["hidden/test_ops.py::test_norm"].message
    assert any("time budget" in n for n in report.notes)
    assert by_id["hidden/test_gradescope.py::test_partial"].passed  # ran before the budget was spent
