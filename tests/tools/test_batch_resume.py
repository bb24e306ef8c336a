"""``lmgrade batch`` stopped by Ctrl-C, then ``--resume``d, ends where an uninterrupted run ends.

One test, because every step needs the previous one's output folder: 12 toy submissions in 5
distinct stagings (identical ones are graded once) are graded once without interruption, once
interrupted by SIGINT to the batch's process group (what Ctrl-C sends) as soon as the first
result is recorded, and then resumed. The interrupted batch runs as a subprocess (a signal to
pytest's own process would stop pytest); the uninterrupted run and the resume run in-process
with ``grader.runner.grade`` counted, so "grades only the rest" is a count, not a timing.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import grader.runner
from grader.batch import DETAILED_CSV, NOT_GRADED, STATE_FILE
from grader.mutants import list_mutants, materialise

# 12 submissions, 5 distinct stagings: what gets graded is the distinct ones
KINDS = ["reference"] * 3 + ["template"] * 3 + ["no_scale"] * 2 + ["syntax_error"] * 2 + ["wrong_file_name"] * 2
DISTINCT = 5
STOP_WITHIN = 5.0  # seconds from SIGINT to the process's exit, files written (0.7 s idle)


def _write_submission(toy, folder: Path, kind: str) -> None:
    folder.mkdir(parents=True)
    ref = toy.reference_dir
    if kind == "reference":
        for name in ("ops.py", "helper.py"):
            shutil.copyfile(ref / name, folder / name)
    elif kind == "template":
        shutil.copytree(toy.template_dir, folder, dirs_exist_ok=True)
    elif kind == "no_scale":
        shutil.copyfile(ref / "helper.py", folder / "helper.py")
        materialise(next(m for m in list_mutants(toy) if m.name == kind), ref, folder, toy)
    elif kind == "syntax_error":
        (folder / "ops.py").write_text("def scaled(x, s)\n    return x * s\n")
    else:
        (folder / "operations.py").write_text("def scaled(x, s):\n    return x * s\n")


def _export(toy, base: Path) -> Path:
    """A plain folder of folders, interleaved so the first few gradings are all distinct."""
    order = sorted(range(len(KINDS)), key=lambda i: (KINDS[:i].count(KINDS[i]), i))
    for n, i in enumerate(order):
        _write_submission(toy, base / f"student_{n:02d}", KINDS[i])
    return base


def _rows(out: Path) -> list[dict]:
    with open(out / DETAILED_CSV, newline="") as f:
        return list(csv.DictReader(f))


def _state(out: Path) -> dict:
    return json.loads((out / STATE_FILE).read_text())


def _untimed(results: Path) -> list[dict]:
    """A results.json's tests without their durations (the only thing two gradings differ in)."""
    tests = json.loads(results.read_text())["tests"]
    for t in tests:
        t["extra_data"].pop("duration", None)
    return tests


@pytest.fixture
def count_gradings(monkeypatch) -> list[str]:
    """The submission labels ``grade`` is called with, in this process."""
    calls: list[str] = []
    real = grader.runner.grade

    def counted(assignment, submission, options=None, **overrides):
        calls.append(overrides.get("label") or str(submission))
        return real(assignment, submission, options, **overrides)

    monkeypatch.setattr(grader.runner, "grade", counted)
    return calls


def test_an_interrupted_batch_writes_what_finished_and_resumes_to_the_same_grades(
    toy, toy_root, shared_tmp, monkeypatch, capsys, count_gradings
):
    from grader.cli import main

    base = shared_tmp / "resume"
    export = _export(toy, base / "export")
    monkeypatch.setenv("LMGRADE_HOME", str(toy_root))

    # 1. The uninterrupted run: what the resumed one must end with.
    full = base / "full"
    assert main(["batch", "toy", str(export), "-o", str(full), "--jobs", "1"]) == 0
    assert len(count_gradings) == DISTINCT
    expected = _rows(full)
    assert len(expected) == len(KINDS) and all(r["status"] == "graded" for r in expected)
    capsys.readouterr()

    # 2. The same batch, Ctrl-C'd once the first submission is finished.
    out = base / "out"
    runs = base / "runs"  # where this batch's temporary folders go (under root), to see nothing is left
    runs.mkdir()
    runs.chmod(0o711)
    env = {**os.environ, "LMGRADE_RUN_ROOT": str(runs), "COLUMNS": "100"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grader",
            "batch",
            "toy",
            str(export),
            "-o",
            str(out),
            "--jobs",
            "1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            if _state(out)["reports"]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
    sent = time.time()
    stdout, stderr = proc.communicate(timeout=120)
    stopped_after = time.time() - sent
    assert proc.returncode == 130, (stdout, stderr)
    assert stopped_after < STOP_WITHIN, (stopped_after, stdout, stderr)
    assert "Traceback" not in stderr and "SIGINT: stopping the batch" in stderr, stderr

    state = _state(out)
    done = len(state["reports"])  # distinct stagings finished before the stop
    assert state["interrupted"] is True and 1 <= done < DISTINCT, state["submissions"]
    rows = _rows(out)
    assert [r["submission_id"] for r in rows] == [r["submission_id"] for r in expected]
    graded = [r for r in rows if r["status"] == "graded"]
    missing = [r for r in rows if r["status"] == "not graded"]
    assert len(graded) + len(missing) == len(KINDS) and missing
    assert all(r["notes"] == NOT_GRADED and r["score"] == "" for r in missing)
    assert {r["submission_id"] for r in graded} == set(state["submissions"])  # the state knows each one
    by_id = {r["submission_id"]: r for r in expected}
    assert all(r == by_id[r["submission_id"]] for r in graded)  # what finished is final
    assert f"interrupted (SIGINT): {len(missing)} submission(s) not graded" in stdout, stdout
    assert f"{len(missing)} of {len(KINDS)} submissions were not graded: the batch was" in " ".join(
        (out / "report.html").read_text().split()
    )
    assert sorted(p.stem for p in (out / "results").iterdir()) == sorted(r["submission_id"] for r in graded)
    if os.geteuid() == 0:
        assert not list(runs.iterdir())  # no stray temporary folder

    # 3. The folder is not graded into again without being told how.
    again = subprocess.run(
        [sys.executable, "-m", "grader", "batch", "toy", str(export), "-o", str(out)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 2 and again.stderr.strip().count("\n") == 0, again.stderr
    assert "is not empty: give --resume" in again.stderr and _state(out) == state

    # 4. --resume grades only the rest; the final grade file is the uninterrupted run's.
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()}
    count_gradings.clear()
    assert main(["batch", "toy", str(export), "-o", str(out), "--jobs", "1", "--resume"]) == 0
    assert len(count_gradings) == DISTINCT - done, count_gradings
    assert not set(count_gradings) & set(state["submissions"])
    printed = capsys.readouterr().out
    assert f"resumed: {len(graded)} submission(s) kept from the earlier run" in printed, printed
    assert _rows(out) == expected
    assert all((out / "results" / name).stat().st_mtime_ns == ns for name, ns in kept.items())
    for name in os.listdir(full / "results"):
        assert _untimed(out / "results" / name) == _untimed(full / "results" / name), name
    final = _state(out)
    assert final["interrupted"] is False and len(final["reports"]) == DISTINCT
    assert "were not graded" not in (out / "report.html").read_text()

    # 5. A submission changed since: recognised by content, graded again; the others are kept.
    changed = next(r["submission_id"] for r in expected if r["score"] == f"{toy.total_points:g}")
    with open(export / changed / "ops.py", "a") as f:
        f.write("\n# resubmitted\n")
    count_gradings.clear()
    assert main(["batch", "toy", str(export), "-o", str(out), "--jobs", "1", "--resume"]) == 0
    assert count_gradings == [changed]
    scores = [(r["submission_id"], r["score"]) for r in _rows(out)]
    assert scores == [(r["submission_id"], r["score"]) for r in expected]  # a comment changes no grade
