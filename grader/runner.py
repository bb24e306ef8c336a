"""Grade one submission: stage it, run the suite in a child process, score from the rubric.

The child is ``python -m pytest`` with the lmgrade plugin; it streams one JSON line per test
event. This parent never imports student code. It watches the stream: a test that runs past
its timeout gets the child's whole process group killed, and a child that dies (segfault,
``os._exit``, out of memory) is restarted on the tests that have not run, so one bad test
costs only its own points. Points come from the rubric, never from the child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader.assignment import Assignment, TestSpec
from grader.submission import StagedSubmission, SubmissionError, stage

MAX_RESTARTS = 25
GRACE_SECONDS = 15.0  # start-up (imports) and teardown on top of the per-test timeout
POLL_SECONDS = 0.05
LOG_TAIL = 3000


@dataclass
class TestResult:
    __test__ = False

    test_id: str
    outcome: str  # passed | failed | error | skipped | timeout | crashed | not run
    message: str = ""
    stdout: str = ""
    duration: float = 0.0
    score: float = 0.0
    max_score: float = 0.0
    question: str = ""
    question_name: str = ""
    visibility: str = "visible"
    extra: dict = field(default_factory=dict)  # gradescope-utils decorator values

    @property
    def passed(self) -> bool:
        return self.outcome == "passed" and self.score >= self.max_score


@dataclass
class GradeReport:
    assignment: Assignment
    submission: str
    tests: list[TestResult]
    notes: list[str]
    execution_time: float
    log_tail: str = ""

    @property
    def score(self) -> float:
        return round(sum(t.score for t in self.tests), 6)

    @property
    def max_score(self) -> float:
        return round(sum(t.max_score for t in self.tests), 6)


def grade(
    assignment: Assignment,
    submission: Path | None,
    *,
    base: Path | None = None,
    overlays: tuple[Path, ...] = (),
    results_path: Path | None = None,
    timeout: float | None = None,
    pytest_args: tuple[str, ...] = (),
    label: str | None = None,
) -> GradeReport:
    """Grade ``submission`` (a folder) and, if asked, write Gradescope's results.json."""
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="lmgrade-") as tmp:
        tmp_path = Path(tmp)
        try:
            staged = stage(assignment, submission, tmp_path / "submission", base=base, overlays=overlays)
        except SubmissionError as err:
            staged = None
            notes = [str(err)]
        if staged is None:
            events: dict[str, dict] = {}
            log_tail = ""
        else:
            notes = list(staged.notes) + [f"{alias}: {msg}" for alias, msg in staged.errors.items()]
            on_progress = None
            if results_path is not None:
                def on_progress(evts):  # a global kill still leaves the tests so far
                    _write_partial(assignment, evts, notes, started, results_path, label)
            events, log_tail = run_suite(assignment, staged, tmp_path, timeout=timeout,
                                         pytest_args=pytest_args, on_progress=on_progress)
        report = score(assignment, events, notes, time.time() - started, label or str(submission))
        report.log_tail = log_tail
    if results_path is not None:
        from grader.results import write_results

        write_results(report, results_path)
    return report


def _write_partial(assignment, events, notes, started, path, label) -> None:
    from grader.results import write_results

    write_results(score(assignment, events, notes, time.time() - started, label or ""), path)


def run_suite(
    assignment: Assignment,
    staged: StagedSubmission,
    workdir: Path,
    *,
    timeout: float | None = None,
    pytest_args: tuple[str, ...] = (),
    on_progress=None,
    record_variant: str | None = None,
    snapshots: Path | None = None,
) -> tuple[dict[str, dict], str]:
    """Run the suite on a staged folder; return {test_id: result event} and the log tail."""
    per_test = float(timeout or assignment.timeout)
    events: dict[str, dict] = {}
    collected: list[str] | None = None
    remaining: list[str] | None = None
    log_tail = ""
    for attempt in range(MAX_RESTARTS):
        outcomes = workdir / f"outcomes-{attempt}.jsonl"
        outcomes.touch()
        args = [str(assignment.suite_dir / t) for t in remaining] if remaining is not None else [str(assignment.suite_dir)]
        cmd = _pytest_command(assignment, staged.path, outcomes, per_test, args, pytest_args, record_variant, snapshots)
        log_path = workdir / f"child-{attempt}.log"
        rc, running, timed_out, new = _run_child(cmd, staged.path, outcomes, log_path, per_test, events, on_progress)
        log_tail = _tail(log_path)
        for ev in new:
            if ev["event"] == "collected" and collected is None:
                collected = ev["tests"]
        if running is not None and running not in events:
            why = (f"timed out after {per_test:.0f} s" if timed_out
                   else f"the test process died while running this test ({_describe_exit(rc)})")
            events[running] = {"event": "result", "test": running, "outcome": "timeout" if timed_out else "crashed",
                               "message": why, "duration": 0.0, "stdout": ""}
            if on_progress:
                on_progress(events)
        if collected is None:
            break  # nothing collected: the suite itself could not start; scored as not run
        remaining = [t for t in collected if t not in events]
        progressed = running is not None or any(ev["event"] == "result" for ev in new)
        if not remaining or not progressed or (running is None and rc in (0, 1)):
            break
    if collected:
        for t in collected:
            events.setdefault(t, {"event": "result", "test": t, "outcome": "not run",
                                  "message": "this test did not run", "stdout": ""})
    return events, log_tail


def _pytest_command(assignment, staged_path, outcomes, per_test, args, pytest_args, record_variant, snapshots):
    ini = staged_path.parent / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")  # keep any pyproject/pytest.ini around out of the run
    cmd = [
        sys.executable, "-m", "pytest", *args,
        "-p", "grader.plugin", "-p", "no:cacheprovider", "-c", str(ini),
        "--rootdir", str(assignment.suite_dir), "-q", "-rN", "--no-header", "--import-mode=importlib",
        "--lmgrade-assignment", assignment.id, "--submission", str(staged_path), "--lmgrade-staged",
        "--lmgrade-outcomes", str(outcomes), f"--timeout={per_test:g}", "--timeout-method=signal",
        *pytest_args,
    ]
    if record_variant:
        cmd += ["--lmgrade-record", record_variant]
    if snapshots:
        cmd += ["--lmgrade-snapshots", str(snapshots)]
    return cmd


def child_env() -> dict[str, str]:
    """A clean environment: no user PYTHONPATH, nothing reaching the network, quiet libraries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST_"))}
    env.update({
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg",
        "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "TQDM_DISABLE": "1",  # progress bars would fill the "your code printed" section
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
    })
    return env


def _run_child(cmd, cwd, outcomes, log_path, per_test, events, on_progress):
    """Run one child; return (exit code, test running at the end, timed out?, new events)."""
    new: list[dict] = []
    running: str | None = None
    running_since = time.time()
    timed_out = False
    with open(log_path, "wb") as log, open(outcomes, encoding="utf-8") as stream:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=child_env(), start_new_session=True)
        buffer = ""
        while True:
            rc = proc.poll()
            chunk = stream.read()
            if chunk:
                buffer += chunk
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    ev = _parse_event(line)
                    if ev is None:
                        continue
                    new.append(ev)
                    if ev["event"] == "start":
                        running, running_since = ev["test"], time.time()
                    elif ev["event"] == "result":
                        events[ev["test"]] = ev
                        if ev["test"] == running:
                            running = None
                        if on_progress:
                            on_progress(events)
            if rc is not None:
                break
            limit = per_test + GRACE_SECONDS
            if running is not None and time.time() - running_since > limit:
                timed_out = True
                _kill_group(proc)
                rc = proc.wait()
                break
            time.sleep(POLL_SECONDS)
        _kill_group(proc)  # nothing the child started outlives it
    return rc, running, timed_out, new


def _parse_event(line: str) -> dict | None:
    try:
        ev = json.loads(line)
    except json.JSONDecodeError:
        return None
    return ev if isinstance(ev, dict) and "event" in ev else None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _describe_exit(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-LOG_TAIL:]
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


# -- scoring ------------------------------------------------------------------------------------

def score(assignment: Assignment, events: dict[str, dict], notes: list[str], elapsed: float, label: str) -> GradeReport:
    """Turn result events into points. The rubric decides points; the child only reports."""
    by_base: dict[str, list[dict]] = {}
    for test_id, ev in events.items():
        by_base.setdefault(test_id.split("[", 1)[0], []).append(ev)
    results: list[TestResult] = []
    listed: set[str] = set()
    for spec in assignment.tests:
        listed.add(spec.test_id)
        cases = by_base.get(spec.test_id)
        if not cases:
            results.append(_result(spec, spec.test_id, {"outcome": "not run", "message": "this test did not run"},
                                   spec.points, assignment))
            continue
        share = spec.points / len(cases)
        for ev in sorted(cases, key=lambda e: e["test"]):
            results.append(_result(spec, ev["test"], ev, share, assignment))
    for base, cases in by_base.items():
        if base in listed:
            continue
        for ev in cases:  # not in the rubric: points only from a gradescope-utils @weight
            spec = TestSpec(test_id=base, points=float(ev.get("weight") or 0.0), question="", question_name="")
            results.append(_result(spec, ev["test"], ev, spec.points, assignment))
    return GradeReport(assignment=assignment, submission=label, tests=results, notes=notes, execution_time=elapsed)


def _result(spec: TestSpec, test_id: str, ev: dict, max_score: float, assignment: Assignment) -> TestResult:
    outcome = ev.get("outcome", "not run")
    earned = max_score if outcome == "passed" else 0.0
    extra = {k: ev[k] for k in ("number", "visibility", "tags", "hide_errors", "leaderboard_column",
                                "leaderboard_order", "leaderboard_value") if k in ev}
    if outcome == "passed" and ev.get("score") is not None:
        # @partial_credit: the test reports its own score; clamp it into [0, max] so a test
        # cannot award more than the rubric allows.
        earned = min(max(float(ev["score"]), 0.0), max_score)
    message = ev.get("message", "")
    if outcome == "passed" and earned < max_score:
        message = message or f"partial credit: {earned:g} of {max_score:g}"
    return TestResult(
        test_id=test_id, outcome=outcome, message=message, stdout=ev.get("stdout", ""),
        duration=float(ev.get("duration", 0.0)), score=round(earned, 6), max_score=round(max_score, 6),
        question=spec.question, question_name=spec.question_name,
        visibility=extra.pop("visibility", None) or assignment.visibility_for(test_id), extra=extra,
    )
