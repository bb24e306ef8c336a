"""Grade one submission: stage it, run the suite in a child process, score from the rubric.

This is the trusted parent. It never imports student code, torch or the suite; it holds the
snapshots (numpy + safetensors) and the rubric. The child is ``python -I -m pytest`` with the
lmgrade plugin, started through ``grader.sandbox`` (limits; under root, a uid of its own that
cannot read the snapshots, the rubric or the reference). Over the oracle channel
(``grader.oracle``) the child reports test events and sends every checked value; the parent
compares and answers.

The parent watches the child: a test that runs past its timeout or its CPU allowance gets the
child's processes killed, and a child that dies (segfault, ``os._exit``, out of memory) is
restarted on the tests that have not run, so one bad test costs only its own points. After
each test every process that test started is killed. Points come from the rubric, and a test
earns them only if pytest passed it and the parent saw every key the reference recorded for
it checked and matched. SIGTERM stops the run cleanly and results.json is still written.
"""

from __future__ import annotations

import json
import math
import os
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader import project_root
from grader.assignment import Assignment, TestSpec, child_view
from grader.envs import child_python_prefix, child_readable_paths
from grader.oracle import MAX_LINE, OracleServer, new_token
from grader.sandbox import (
    RUN_ENV,
    Sandbox,
    SandboxError,
    cpu_seconds,
    give,
    kill_run,
    open_sandbox,
    protect,
    secret_paths,
    temp_root,
    wrapper_command,
)
from grader.snapshots import SnapshotStore
from grader.submission import StagedSubmission, SubmissionError, stage

MAX_RESTARTS = 25
GRACE_SECONDS = 5.0  # on top of the per-test timeout, for pytest-timeout to fail the test itself
TIMING_SLACK = 1.0  # seconds of reporting overhead allowed past the timeout before the parent fails a test
CPU_FACTOR = 2.0  # a test may use this many CPU-seconds per second of its timeout
POLL_SECONDS = 0.05
READ_CHUNK = 1 << 20
OUTPUT_LIMIT = 256 * 2**20  # bytes the child may print outside the tests' captured output
LOG_TAIL = 3000
MAX_MESSAGE = 4000
MAX_STDOUT = 4000
SECRET_ENV = ("GRADESCOPE_TOKEN", "OTTER_TOKEN")


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
    secure: bool = True,
    limits: dict | None = None,
    budget: float | None = None,
) -> GradeReport:
    """Grade ``submission`` (a folder) and, if asked, write Gradescope's results.json.

    ``secure`` (the default) is the trusted-parent / untrusted-child path: the child never sees
    a snapshot and, under root, runs as a uid of its own. ``secure=False`` lets the child compare
    with the snapshots itself (trusted code only: recording checks, benchmarks). ``budget`` caps
    the whole run's wall clock in seconds: tests not finished by then score 0.
    """
    started = time.time()
    notes: list[str] = []
    events: dict[str, dict] = {}
    oracle: OracleServer | None = None
    log_tail = ""
    stop = _StopOnSigterm()
    with stop, tempfile.TemporaryDirectory(prefix="lmgrade-", dir=temp_root()) as tmp:
        tmp_path = Path(tmp)
        try:
            staged = stage(assignment, submission, tmp_path / "submission", base=base, overlays=overlays)
        except SubmissionError as err:
            staged = None
            notes.append(str(err))
        if staged is not None:
            notes += list(staged.notes) + [f"{alias}: {msg}" for alias, msg in staged.errors.items()]
            on_progress = None
            if results_path is not None:
                def on_progress(evts, oracle_now):  # a global kill still leaves the tests so far
                    _write_partial(assignment, evts, notes, started, results_path, label, oracle_now)
            run = SuiteRun(assignment, staged, tmp_path, timeout=timeout, pytest_args=pytest_args,
                           secure=secure, limits=limits, stop=stop, on_progress=on_progress, budget=budget)
            try:
                events, log_tail = run.run()
            except SandboxError as err:
                notes.append(f"secure grading could not be set up, so nothing was run: {err}")
            oracle = run.oracle
            notes += run.notes
        report = score(assignment, events, notes, time.time() - started, label or str(submission), oracle=oracle)
        report.log_tail = log_tail
    if results_path is not None:
        from grader.results import write_results

        write_results(report, results_path)
    return report


def _write_partial(assignment, events, notes, started, path, label, oracle) -> None:
    from grader.results import write_results

    write_results(score(assignment, events, notes, time.time() - started, label or "", oracle=oracle), path)


class _StopOnSigterm:
    """While grading in the main thread, SIGTERM (Gradescope's or `timeout`'s) stops the run
    cleanly: the child's processes are killed and results.json is finalised."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


class _BoundedLog:
    """The child's stdout/stderr: the first and last few KB kept, the rest counted."""

    def __init__(self, keep: int = LOG_TAIL) -> None:
        self.keep, self.head, self.tail, self.total = keep, b"", b"", 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if len(self.head) < self.keep:
            room = self.keep - len(self.head)
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail = (self.tail + chunk)[-self.keep:]

    def text(self) -> str:
        skipped = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {skipped} bytes not kept ...]\n".encode() if skipped > 0 else b""
        return (self.head + middle + self.tail).decode("utf-8", errors="replace")


class SuiteRun:
    """One grading run of a staged submission: children started, watched, restarted, cleaned up."""

    def __init__(self, assignment: Assignment, staged: StagedSubmission, workdir: Path, *,
                 timeout: float | None = None, pytest_args: tuple[str, ...] = (), secure: bool = True,
                 limits: dict | None = None, stop: _StopOnSigterm | None = None, on_progress=None,
                 budget: float | None = None):
        self.assignment, self.staged, self.workdir = assignment, staged, workdir
        self.per_test = float(timeout or assignment.timeout)
        self.pytest_args, self.secure, self.limits = pytest_args, secure, limits
        self.stop, self.on_progress = stop, on_progress
        self.deadline = time.time() + budget if budget else None
        self.events: dict[str, dict] = {}
        self.notes: list[str] = []
        self.oracle: OracleServer | None = None
        self.collected: list[str] | None = None
        self.log = _BoundedLog()

    # -- set-up --------------------------------------------------------------------------------
    def _prepare(self, box: Sandbox) -> list[str]:
        """Close the secrets, hand the child its folders; return the plugin's extra options."""
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        config = self.workdir / "child-config.json"
        config.write_text(json.dumps(child_view(self.assignment)), encoding="utf-8")
        if box.dropped:
            os.chmod(self.workdir, 0o711)
            give(self.staged.path, box.uid)
            give(home, box.uid)
            needed = [self.assignment.suite_dir, self.staged.path] + \
                [p for p in (self.assignment.fixtures_dir,) if p.is_dir()] + child_readable_paths(self.assignment)
            protect(secret_paths([self.assignment.root, project_root()]), box.uid, needed=needed)
        elif self.secure:
            self.notes.append("not graded as root: the submission ran as the current user, without a uid of "
                              "its own, so it could read what this user can read (on Gradescope it cannot)")
        extra = ["--lmgrade-config", str(config)]
        if not self.secure:
            extra += ["--lmgrade-snapshots", str(self.assignment.snapshots_dir)]
        return extra

    def run(self) -> tuple[dict[str, dict], str]:
        store = SnapshotStore(self.assignment.snapshots_dir) if self.secure else None
        self.oracle = OracleServer(store, new_token())
        box = open_sandbox(new_token(), limits=self.limits) if self.secure else Sandbox(token=new_token())
        try:
            extra = self._prepare(box)
            self._run_children(box, extra)
        finally:
            box.release()
        if self.oracle.rejected:
            self.notes.append(f"{self.oracle.rejected} messages on the grader's channel did not come from the "
                              "grader and were ignored")
        if self.collected:
            for t in self.collected:
                self.events.setdefault(t, {"event": "result", "test": t, "outcome": "not run",
                                           "message": "this test did not run", "stdout": ""})
        return self.events, self.log.text()

    def _run_children(self, box: Sandbox, extra: list[str]) -> None:
        remaining: list[str] | None = None
        for _attempt in range(MAX_RESTARTS):
            suite = self.assignment.suite_dir
            args = [str(suite / t) for t in remaining] if remaining is not None else [str(suite)]
            child = _Child(self, box, args, extra)
            child.run()
            if child.running is not None and child.running not in self.events:
                self._record(child.running, child.why_stopped or
                             f"the test process died while running this test ({_describe_exit(child.rc)})",
                             "timeout" if child.timed_out else "crashed")
            if self.stop is not None and self.stop.requested:
                self.notes.append("grading was stopped (SIGTERM) before every test had run")
                return
            if self.deadline is not None and time.time() > self.deadline:
                self.notes.append("the run used up its time budget before every test had run")
                return
            if self.collected is None:  # the suite itself could not start; scored as not run
                last = [ln for ln in self.log.text().splitlines() if ln.strip()][-6:]
                self.notes.append("the tests could not be collected" + (": " + " | ".join(last) if last else ""))
                return
            remaining = [t for t in self.collected if t not in self.events]
            if not remaining or not child.progressed or (child.running is None and child.rc in (0, 1)
                                                          and not child.restart):
                return

    def _record(self, test_id: str, message: str, outcome: str) -> None:
        self.events[test_id] = {"event": "result", "test": test_id, "outcome": outcome,
                                "message": message, "duration": 0.0, "stdout": ""}
        if self.on_progress:
            self.on_progress(self.events, self.oracle)


class _Child:
    """One pytest child: started through the sandbox wrapper, its channel and output watched."""

    def __init__(self, run: SuiteRun, box: Sandbox, args: list[str], extra: list[str]):
        self.r, self.box = run, box
        self.cmd = _pytest_command(run.assignment, run.staged.path, run.per_test, args, run.pytest_args,
                                   extra=extra)
        self.rc: int | None = None
        self.running: str | None = None
        self.running_since = 0.0
        self.cpu_at_start = 0.0
        self.timed_out = False
        self.why_stopped: str | None = None
        self.progressed = False
        self.restart = False
        self._buffer = b""

    def run(self) -> None:
        ev_r, ev_w = os.pipe()
        rp_r, rp_w = os.pipe()
        out_r, out_w = os.pipe()
        env = child_env(home=self.r.workdir / "home")
        env[RUN_ENV] = self.box.token
        oracle_arg = ["--lmgrade-oracle", f"{ev_w},{rp_r}"]
        try:
            self.proc = subprocess.Popen(
                wrapper_command(self.box, self.cmd + oracle_arg), cwd=self.r.staged.path,
                stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, env=env, pass_fds=(ev_w, rp_r),
                start_new_session=True)
        finally:
            for fd in (ev_w, rp_r, out_w):
                os.close(fd)
        os.set_blocking(rp_w, False)
        self._reply_fd = rp_w
        self._reply({"token": self.r.oracle.token}, raw=True)
        try:
            self._watch(ev_r, out_r)
        finally:
            _kill_group(self.proc)
            kill_run(self.box, keep=None)  # nothing the child started outlives it
            for fd in (ev_r, out_r, rp_w):
                os.close(fd)

    def _watch(self, ev_r: int, out_r: int) -> None:
        sel = selectors.DefaultSelector()
        sel.register(ev_r, selectors.EVENT_READ, "events")
        sel.register(out_r, selectors.EVENT_READ, "output")
        open_fds = 2
        while True:
            for key, _ in sel.select(timeout=POLL_SECONDS):
                chunk = os.read(key.fd, READ_CHUNK)
                if not chunk:
                    sel.unregister(key.fd)
                    open_fds -= 1
                elif key.data == "events":
                    self._feed_events(chunk)
                else:
                    self.r.log.feed(chunk)
                    if self.r.log.total > OUTPUT_LIMIT:
                        self._stop(f"the test process printed more than {OUTPUT_LIMIT // 2**20} MB", timeout=False)
            self.rc = self.proc.poll()
            if self.rc is not None and open_fds == 0:
                break
            if self.rc is not None and open_fds and not sel.select(timeout=0):
                break  # the child is gone; a grandchild may hold the pipes open
            if self.r.stop is not None and self.r.stop.requested:
                self._stop("grading was stopped (SIGTERM) while this test ran", timeout=False)
                break
            if self.restart:
                self._stop("", timeout=False)
                break
            if self.r.deadline is not None and time.time() > self.r.deadline:
                self._stop("the run's time budget ran out while this test ran", timeout=True)
                break
            if self.running is not None:
                elapsed = time.time() - self.running_since
                if elapsed > self.r.per_test + GRACE_SECONDS:
                    self._stop(f"timed out after {self.r.per_test:g} s", timeout=True)
                    break
                used = cpu_seconds(self.proc.pid) - self.cpu_at_start
                if used > CPU_FACTOR * self.r.per_test + GRACE_SECONDS:
                    self._stop(f"used more than {CPU_FACTOR * self.r.per_test:g} s of CPU time", timeout=True)
                    break
        sel.close()

    def _stop(self, why: str, *, timeout: bool) -> None:
        self.timed_out, self.why_stopped = timeout, why
        _kill_group(self.proc)
        kill_run(self.box, keep=None)
        self.rc = self.proc.wait()

    def _feed_events(self, chunk: bytes) -> None:
        self._buffer += chunk
        if b"\n" not in self._buffer and len(self._buffer) > MAX_LINE:
            self._buffer = b""
            self.r.oracle.rejected += 1
            return
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            msg = self.r.oracle.parse(line)
            if msg is not None:
                self._handle(msg)

    def _handle(self, msg: dict) -> None:
        if self.restart:
            return  # this child is being replaced: what it sends after that result is not used
        r, kind, test = self.r, msg["event"], msg.get("test")
        if kind == "collected" and r.collected is None and isinstance(msg.get("tests"), list):
            r.collected = [t for t in msg["tests"] if isinstance(t, str)]
        elif kind == "start" and r.collected and test in r.collected and test not in r.events:
            self.running, self.running_since = test, time.time()
            self.cpu_at_start = cpu_seconds(self.proc.pid)
            r.oracle.reset(test)
            self.progressed = True
        elif kind == "check":
            key = msg.get("key")
            if test != self.running or self.running is None:
                r.oracle.rejected += 1
                answer = {"ok": False, "message": "not the running test"}
            else:
                answer = r.oracle.check(test, msg)
            self._reply({**answer, "key": key})
        elif kind == "result" and test is not None and test == self.running:
            r.events[test] = _clean_result(msg)
            took = time.time() - self.running_since
            if took > r.per_test + max(TIMING_SLACK, 0.05 * r.per_test):
                # the parent's clock decides: pytest-timeout's alarm can be swallowed (a fork
                # handler, a C extension) and a test must not pass by outlasting it
                r.events[test].update(outcome="timeout", score=None,
                                      message=f"took {took:.1f} s, over its timeout of {r.per_test:g} s")
            self.running = None
            self.restart = msg.get("restart") is True  # the rest of the tests get a fresh child
            kill_run(self.box, keep=self.proc.pid)  # what this test started ends with it
            if r.on_progress:
                r.on_progress(r.events, r.oracle)
        elif kind == "note" and isinstance(msg.get("text"), str):
            note = msg["text"][:500]
            if note not in r.notes:
                r.notes.append(note)
        else:
            r.oracle.rejected += 1

    def _reply(self, msg: dict, raw: bool = False) -> None:
        data = (json.dumps(msg) + "\n").encode() if raw else self.r.oracle.frame(msg)
        try:
            os.write(self._reply_fd, data)
        except (BlockingIOError, BrokenPipeError):
            pass  # the child is not reading its answers: its own checks will time out


RESULT_OUTCOMES = ("passed", "failed", "error", "skipped")
DECORATOR_KEYS = ("weight", "number", "visibility", "tags", "hide_errors", "leaderboard_column",
                  "leaderboard_order", "leaderboard_value", "score")


def _clean_result(msg: dict) -> dict:
    """Only known fields, of the right types, cut to size: the child's word, checked."""
    outcome = msg.get("outcome") if msg.get("outcome") in RESULT_OUTCOMES else "error"
    out = {"event": "result", "test": msg["test"], "outcome": outcome,
           "message": str(msg.get("message", ""))[:MAX_MESSAGE], "stdout": str(msg.get("stdout", ""))[:MAX_STDOUT]}
    try:
        out["duration"] = float(msg.get("duration", 0.0))
    except (TypeError, ValueError):
        out["duration"] = 0.0
    for k in DECORATOR_KEYS:
        v = msg.get(k)
        if k in ("weight", "score", "leaderboard_value"):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[k] = float(v)
        elif k == "tags":
            if isinstance(v, list):
                out[k] = [str(x)[:100] for x in v[:20]]
        elif isinstance(v, str):
            out[k] = v[:1000]
    return out


def _pytest_command(assignment, staged_path, per_test, args, pytest_args, *, extra=(), outcomes=None,
                    record_variant=None, snapshots=None):
    ini = staged_path.parent / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")  # keep any pyproject/pytest.ini around out of the run
    cmd = [
        *child_python_prefix(assignment), *args,  # pytest in the course environment (grader.envs)
        "-p", "grader.plugin", "-p", "no:cacheprovider", "-c", str(ini),
        "--rootdir", str(assignment.suite_dir), "-q", "-rN", "--no-header", "--import-mode=importlib",
        "--lmgrade-assignment", assignment.id, "--submission", str(staged_path), "--lmgrade-staged",
        f"--timeout={per_test:g}", "--timeout-method=signal", *extra, *pytest_args,
    ]
    if outcomes:
        cmd += ["--lmgrade-outcomes", str(outcomes)]
    if record_variant:
        cmd += ["--lmgrade-record", record_variant]
    if snapshots:
        cmd += ["--lmgrade-snapshots", str(snapshots)]
    return cmd


def child_env(home: Path | None = None) -> dict[str, str]:
    """A clean environment: no user PYTHONPATH, nothing reaching the network, quiet libraries."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PYTEST_", "LMGRADE_")) and k not in SECRET_ENV}
    env.update({
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg",
        "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "TQDM_DISABLE": "1",  # progress bars would fill the "your code printed" section
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
    })
    if home is not None:
        for var in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "MPLCONFIGDIR", "HF_HOME"):
            env[var] = str(home)
    return env


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

def score(assignment: Assignment, events: dict[str, dict], notes: list[str], elapsed: float, label: str,
          oracle: OracleServer | None = None) -> GradeReport:
    """Turn result events into points. The rubric decides points; the child only reports, and
    with an ``oracle`` a pass counts only if the parent's own record of the checks agrees."""
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
            results.append(_result(spec, ev["test"], _with_evidence(ev, oracle), share, assignment))
    for base, cases in by_base.items():
        if base in listed:
            continue
        for ev in cases:  # not in the rubric: points only from a gradescope-utils @weight
            spec = TestSpec(test_id=base, points=float(ev.get("weight") or 0.0), question="", question_name="")
            results.append(_result(spec, ev["test"], _with_evidence(ev, oracle), spec.points, assignment))
    return GradeReport(assignment=assignment, submission=label, tests=results, notes=notes, execution_time=elapsed)


def _with_evidence(ev: dict, oracle: OracleServer | None) -> dict:
    if oracle is None or ev.get("outcome") != "passed":
        return ev
    why = oracle.verdict(ev["test"])
    return ev if why is None else {**ev, "outcome": "failed", "message": why, "score": None}


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
