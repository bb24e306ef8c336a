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
import tempfile
import time
from pathlib import Path

import pytest

from grader import sandbox
from grader.oracle import OracleServer, pack_arrays
from grader.report import score
from grader.results import validate
from grader.runner import grade
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


def _started(server, test):
    server.collected = server.collected or [test]
    assert server.handle({"event": "start", "test": test}, now=0.0).started == test


def test_a_key_is_answered_once(server, toy):
    test = "hidden/test_ops.py::test_layout"
    _started(server, test)
    first = server.answer(test, _check_msg("kind", "zzz"))
    again = server.answer(test, _check_msg("kind", "a"))  # the right answer, asked for a second time
    assert first["ok"] is False and again["ok"] is False and "already sent" in again["message"]
    assert not server.verdict(test).ok


def test_verdict_needs_every_recorded_key(server, toy):
    test = "hidden/test_ops.py::test_layout"
    assert "`kind`, `y`" in server.verdict(test).message  # nothing sent: no pass
    assert server.answer(test, _check_msg("kind", "a"))["ok"]
    assert "`y`" in server.verdict(test).message and not server.verdict(test).ok


def test_hidden_answers_hold_no_expected_value(server, toy):
    test = "hidden/test_ops.py::test_stats"
    answer = server.answer(test, _check_msg("stats", [3, 99.0, "ok"]))
    assert not answer["ok"] and "15" not in answer["message"]  # expected sum of arange(6) is 15


def test_hidden_arrays_give_no_error_magnitude(server, toy):
    """A NaN probe with one finite entry used to get back that entry's error, one hidden value
    per ask: a hidden array's answer now says where and how many, never by how much."""
    test = "hidden/test_ops.py::test_norm"
    import torch

    probe = torch.full((4, 8), float("nan"))
    probe[0, 0] = 0.0
    answer = server.answer(test, _check_msg("y", probe))
    assert not answer["ok"] and "differ at 32 of 32" in answer["message"]
    assert "abs error" not in answer["message"] and "~" not in answer["message"]


def test_a_claimed_pass_without_evidence_scores_zero(toy, server):
    events = {
        "hidden/test_ops.py::test_stats": {
            "event": "result",
            "test": "hidden/test_ops.py::test_stats",
            "outcome": "passed",
            "message": "",
            "stdout": "",
        }
    }
    report = score(toy, events, [], 0.0, "forged", oracle=server)
    t = next(t for t in report.tests if t.test_id == "hidden/test_ops.py::test_stats")
    assert t.score == 0 and t.outcome == "failed" and "did not send `stats`" in t.message
    assert report.evidence_score == sum(t.max_score for t in report.tests if toy.is_child_judged(t.test_id))


# -- the whole path -------------------------------------------------------------------------------


@needs_root
def test_student_code_runs_as_its_own_uid(toy, tmp_path):
    folder = _submission(
        toy,
        tmp_path,
        "whoami",
        {
            "    return x * s + OFFSET\n": '    import os; print("UID", os.getuid(), "EUID", os.geteuid())\n    return x * s + OFFSET\n'  # noqa: E501
        },
    )
    report = grade(toy, folder)
    printed = " ".join(t.stdout for t in report.tests if "UID" in t.stdout)
    uid = int(printed.split("UID", 1)[1].split()[0])
    assert uid in sandbox.UID_POOL and "EUID 0" not in printed
    assert report.score == report.max_score


@needs_root
def test_secrets_are_closed_to_the_child(toy):
    box = sandbox.open_sandbox("probe-test")
    try:
        (toy.root / ".git").mkdir(exist_ok=True)
        (toy.root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        closed = sandbox.lock_down([toy.root], box.uid, needed=[toy.suite_dir / "hidden"])
        assert toy.snapshots_dir in closed and toy.reference_dir.parent in closed and toy.root / ".git" in closed
        assert sandbox.probe_readable([*closed, toy.root / ".git" / "HEAD"], box.uid) == []
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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_stops_the_run_and_keeps_a_valid_results_file(toy_root, tmp_path, toy, sig):
    """SIGTERM (Gradescope's, `timeout`'s) or SIGINT (Ctrl-C): results.json says the run was
    interrupted and the tests that never ran say why."""
    folder = _submission(
        toy,
        tmp_path,
        "hang",
        {
            "    mu = x.mean(-1, keepdim=True)\n": "    import time\n    time.sleep(600)\n    mu = x.mean(-1, keepdim=True)\n"  # noqa: E501
        },
    )
    results = tmp_path / "results.json"
    env = {**os.environ, "LMGRADE_HOME": str(toy_root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "grader", "grade", "toy", str(folder), "--results", str(results)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not _running(results, "hidden/test_ops.py::test_norm"):
        time.sleep(0.2)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    data = json.loads(results.read_text())
    validate(data)
    assert f"interrupted ({sig.name})" in data["output"], out.decode()[-2000:]
    assert "INTERRUPTED: grading was stopped before it finished" in data["output"]
    by_id = {t["extra_data"]["test_id"]: t for t in data["tests"]}
    assert by_id["hidden/test_ops.py::test_scaled[0.5]"]["score"] > 0  # finished before the stop
    assert by_id["hidden/test_ops.py::test_norm"]["score"] == 0
    unrun = [t for t in data["tests"] if t["extra_data"]["outcome"] == "not run"]
    assert unrun and all(t["output"] == "not run: grading was interrupted" for t in unrun)


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
    folder = _submission(
        toy,
        tmp_path,
        "slow",
        {
            "    mu = x.mean(-1, keepdim=True)\n": "    import time\n    time.sleep(600)\n    mu = x.mean(-1, keepdim=True)\n"  # noqa: E501
        },
    )
    started = time.time()
    report = grade(toy, folder, budget=12)
    assert time.time() - started < 40
    by_id = {t.test_id: t for t in report.tests}
    assert by_id["hidden/test_ops.py::test_norm"].score == 0
    assert "time budget" in by_id["hidden/test_ops.py::test_norm"].message
    assert any("time budget" in n for n in report.notes)
    assert by_id["hidden/test_gradescope.py::test_partial"].passed  # ran before the budget was spent


@needs_root
def test_parallel_runs_cannot_read_each_others_submissions(toy, tmp_path):
    """Each run's staged tree is 0700 and owned by its own uid, inside a run folder others can
    pass through but not list: another run's uid can neither find nor read it."""
    from grader.submission import stage

    a, b = sandbox.open_sandbox("run-a"), sandbox.open_sandbox("run-b")
    try:
        work = Path(tempfile.mkdtemp(dir=sandbox.run_folder()))
        os.chmod(work, 0o711)
        staged = stage(toy, toy.reference_dir, work / "submission")
        sandbox.give(staged.path, a.uid)
        target = staged.path / "ops.py"
        assert sandbox.probe_readable([target, staged.path], a.uid) == [str(target), str(staged.path)]
        assert sandbox.probe_readable([target, staged.path, work, Path(sandbox.run_folder())], b.uid) == []
        assert (staged.path.stat().st_mode & 0o777) == 0o700 and staged.path.stat().st_uid == a.uid
    finally:
        a.release()
        b.release()
        shutil.rmtree(work, ignore_errors=True)


DAEMON = """
def scaled(x, s):
    import os
    if not os.environ.get("LMGRADE_DAEMON_STARTED"):
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                with open("@@PIDFILE@@", "w") as f:
                    f.write(str(os.getpid()))
                os.execve("/bin/sleep", ["sleep", "300"], {})
            os._exit(0)
        os.waitpid(pid, 0)
        os.environ["LMGRADE_DAEMON_STARTED"] = "1"
    return x * s + OFFSET
"""


@needs_root
def test_without_root_a_double_forked_daemon_does_not_outlive_the_run(toy_root, toy, shared_tmp):
    """Run the whole grader as an ordinary user: a double-forked, setsid, execve'd daemon with an
    empty environment is re-parented to the run's keeper (a subreaper) and killed with the run."""
    user = 62_000
    work = Path(tempfile.mkdtemp(dir=shared_tmp))
    os.chmod(work, 0o777)
    pidfile = work / "daemon.pid"
    folder = work / "sub"
    shutil.copytree(toy.reference_dir, folder, ignore=shutil.ignore_patterns("variants"))
    text = (folder / "ops.py").read_text()
    start = text.index("def scaled")
    end = text.index("def norm")
    (folder / "ops.py").write_text(text[:start] + DAEMON.replace("@@PIDFILE@@", str(pidfile)) + "\n\n" + text[end:])
    project = work / "toyproj"  # the user's own copy: root's runs closed the shared one to others
    shutil.copytree(toy_root, project, ignore=shutil.ignore_patterns(".lmgrade"))
    for p in [work, *work.rglob("*")]:
        os.chown(p, user, user)
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "LMGRADE_HOME": str(project), "TMPDIR": str(work)}
    proc = subprocess.run(
        [sys.executable, "-m", "grader", "grade", "toy", str(folder), "--results", str(work / "results.json")],
        user=user,
        group=user,
        extra_groups=[],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert (work / "results.json").is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert pidfile.is_file(), "the daemon never started: the test proves nothing"
    daemon = int(pidfile.read_text())
    time.sleep(0.5)
    alive = Path(f"/proc/{daemon}").exists() and "Z" not in Path(f"/proc/{daemon}/stat").read_text().split(")")[1][:3]
    if alive:
        os.kill(daemon, signal.SIGKILL)
    assert not alive, "the daemon outlived the run"
