"""Grade one submission: stage it, run the suite in a watched child process, score the evidence.

This is the trusted parent's process supervisor. It never imports student code, torch or the
suite. The child is pytest with the lmgrade plugin, started through ``grader.sandbox`` (a keeper
process that sets the limits, under root drops to a uid of its own, and reaps everything the
child starts). Over the oracle channel (``grader.oracle``) the child reports test events and
sends every value a test checks; the oracle enforces the protocol and compares, and scoring
(``grader.report``) uses only the oracle's record.

The supervisor watches the child: a test that runs past its timeout or its CPU allowance gets the
run's processes killed, and a child that dies (segfault, ``os._exit``, out of memory) or breaks
the protocol is replaced by a fresh one on the tests that have not run, so one bad test costs only
its own points. After each test, every process that test started is killed. SIGTERM and SIGINT
stop the run cleanly, and results.json is still written, saying the run was interrupted.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from grader.assignment import Assignment, child_view
from grader.childargs import child_args
from grader.envs import child_python_prefix, child_readable_paths, engine_dir, ensure_environment
from grader.oracle import MAX_LINE, OracleServer, new_token
from grader.report import MAX_MESSAGE, GradeReport, score
from grader.sandbox import (
    RUN_ENV,
    Sandbox,
    SandboxError,
    become_subreaper,
    forget_keeper,
    give,
    kill_run,
    kill_tree,
    lock_down,
    open_sandbox,
    private_tmp_targets,
    register_keeper,
    run_cpu_seconds,
    run_folder,
    tree_disk_use,
    wrapper_command,
)
from grader.snapshots import SnapshotStore
from grader.submission import StagedSubmission, stage, syntax_problems

MAX_RESTARTS = 25
GRACE_SECONDS = 5.0  # on top of the per-test timeout, for pytest-timeout to fail the test itself
TIMING_SLACK = 1.0  # seconds of reporting overhead allowed past the timeout before the parent fails a test
CPU_FACTOR = 2.0  # a test may use this many CPU-seconds per second of its timeout
POLL_SECONDS = 0.05
PROGRESS_WRITE_SECONDS = 1.0  # results.json is rewritten with the tests so far at most this often
DISK_POLL_SECONDS = 2.0
READ_CHUNK = 1 << 20
OUTPUT_LIMIT = 256 * 2**20  # bytes the child may print outside the tests' captured output
DISK_LIMIT = 2 * 2**30  # bytes the run may keep in its staged folder and home
DEFAULT_BUDGET = 1800.0  # seconds for a whole `lmgrade grade` run unless told otherwise
LOG_TAIL = 3000
MAX_STDOUT = 4000
SECRET_ENV = ("GRADESCOPE_TOKEN", "OTTER_TOKEN")
INTERRUPTED = "grading was interrupted"
NOTHING_TO_GRADE = "nothing to grade"  # a note's start: none of the handout's files was handed in


@dataclass(frozen=True)
class GradeOptions:
    """How to grade: everything ``grade`` needs beyond the assignment and the submission.

    ``secure`` (the default) is the trusted-parent / untrusted-child path: the child never sees a
    snapshot and, under root, runs as a uid of its own. ``secure=False`` lets the child compare
    with the snapshots itself (trusted code only: benchmarks). ``budget`` caps the run's wall
    clock in seconds (tests not finished by then score 0); None means ``DEFAULT_BUDGET``.
    """

    base: Path | None = None  # the reference, for mutants and variants
    overlays: tuple[Path, ...] = ()
    results_path: Path | None = None
    timeout: float | None = None
    pytest_args: tuple[str, ...] = ()
    label: str | None = None
    secure: bool = True
    limits: dict | None = None
    budget: float | None = None
    warm: bool | None = None  # fork test processes from a warm server (None: $LMGRADE_WARM == "1")
    # stop at the first graded test whose evidence fails (mutant checks: that one test shows the
    # mutant loses points even if it rewrote its own test process); the rest is "not run"
    first_evidence_failure: bool = False
    # a stop request shared with the caller (``lmgrade batch``: one Ctrl-C stops every run of its
    # pool); None: this run stops on its own SIGTERM/SIGINT when graded in the main thread
    stop: StopFlag | None = None

    @property
    def use_warm(self) -> bool:
        return self.warm if self.warm is not None else os.environ.get("LMGRADE_WARM") == "1"


def grade(
    assignment: Assignment, submission: Path | None, options: GradeOptions | None = None, **overrides
) -> GradeReport:
    """Grade ``submission`` (a folder) and, if asked, write Gradescope's results.json.

    ``overrides`` are fields of ``GradeOptions`` (``grade(a, path, timeout=5)``).
    """
    opts = replace(options or GradeOptions(), **overrides)
    started = time.time()
    notes: list[str] = []
    events: dict[str, dict] = {}
    oracle: OracleServer | None = None
    log_tail = ""
    stop = opts.stop if opts.stop is not None else _StopOnSignal()
    become_subreaper()
    handlers = stop if isinstance(stop, _StopOnSignal) else contextlib.nullcontext()
    with handlers, tempfile.TemporaryDirectory(prefix="lmgrade-", dir=run_folder()) as tmp:
        tmp_path = Path(tmp)
        staged = _stage(assignment, submission, tmp_path, opts, notes)
        static: dict = {}
        if staged is not None and opts.secure:
            from grader.rules import staged_findings

            static = staged_findings(assignment, staged)
        if staged is not None:
            on_progress = None
            if opts.results_path is not None:

                def write_so_far(evts, oracle_now):  # a global kill still leaves the tests so far
                    write = _results_writer()
                    write(
                        score(
                            assignment,
                            evts,
                            notes,
                            time.time() - started,
                            opts.label or "",
                            oracle=oracle_now,
                            static=static,
                        ),
                        opts.results_path,
                    )

                on_progress = _Throttled(write_so_far, PROGRESS_WRITE_SECONDS)

            run = SuiteRun(assignment, staged, tmp_path, opts, stop=stop, on_progress=on_progress)
            try:
                events, log_tail = run.run()
            except SandboxError as err:
                notes.append(f"secure grading could not be set up, so nothing was run: {err}")
            oracle = run.oracle
            notes += run.notes.as_list()
        if staged is None and not events:  # nothing ran: each test says why
            why = notes[-1] if notes else "this test did not run"
            events = {
                t.test_id: {"event": "result", "test": t.test_id, "outcome": "not run", "message": why, "stdout": ""}
                for t in assignment.tests
            }
        report = score(
            assignment,
            events,
            notes,
            time.time() - started,
            opts.label or str(submission),
            oracle=oracle,
            static=static,
        )
        report.log_tail = log_tail
        report.interrupted = stop.requested
    if opts.results_path is not None:
        _results_writer()(report, opts.results_path)
    return report


class _Throttled:
    """Calls ``write(events, oracle)`` at most once per ``seconds``; a call that came too soon is
    made by ``flush_due()`` (the watch loop, every poll) once the interval is over, so what a
    global kill leaves is never more than ``seconds`` behind. Rewriting results.json after each
    test cost more than a fast suite's tests (49 writes, each scored, validated and fsync'ed)."""

    def __init__(self, write, seconds: float):
        self.write, self.seconds = write, seconds
        self.last = 0.0
        self.pending: tuple | None = None

    def __call__(self, events, oracle) -> None:
        self.pending = (events, oracle)
        self.flush_due()

    def flush_due(self) -> None:
        if self.pending is not None and time.monotonic() - self.last >= self.seconds:
            events, oracle = self.pending
            self.pending = None
            self.last = time.monotonic()
            self.write(events, oracle)


def _results_writer():
    from grader.results import write_results

    return write_results


def _stage(assignment, submission, tmp_path: Path, opts: GradeOptions, notes: list[str]) -> StagedSubmission | None:
    """Stage the submission; any failure of staging becomes a note, never an exception."""
    try:
        staged = stage(assignment, submission, tmp_path / "submission", base=opts.base, overlays=opts.overlays)
    except Exception as err:
        notes.append(f"the submission could not be staged: {type(err).__name__}: {str(err)[:400]}")
        return None
    if not staged.found and submission is not None:
        expected = " and ".join(" or ".join(names) for names in assignment.modules.values())
        notes.append(
            f"{NOTHING_TO_GRADE}: the submission has no {expected}, the files the handout names; no test was run"
        )
        return None
    notes += list(staged.notes) + [f"{alias}: {msg}" for alias, msg in staged.errors.items()]
    env = getattr(assignment, "environment", None)
    notes += syntax_problems(staged, python=getattr(env, "python", "") or "")
    return staged


class StopFlag:
    """A request to stop grading, read by the supervisor between polls (every POLL_SECONDS).
    Shared by several runs, it lets one signal handler (the batch's, in the main thread) stop
    runs that grade in worker threads, where Python cannot install handlers."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def request(self, signal_name: str) -> None:
        self.signal_name = signal_name
        self.requested = True


class _StopOnSignal(StopFlag):
    """While grading in the main thread, SIGTERM (Gradescope's or `timeout`'s) and SIGINT
    (Ctrl-C) stop the run cleanly: the child's processes are killed and results.json is
    finalised, saying the run was interrupted."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        super().__init__()
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.request(signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


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
            self.tail = (self.tail + chunk)[-self.keep :]

    def text(self) -> str:
        skipped = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {skipped} bytes not kept ...]\n".encode() if skipped > 0 else b""
        return (self.head + middle + self.tail).decode("utf-8", errors="replace")


class SuiteRun:
    """One grading run of a staged submission: children started, watched, replaced, cleaned up."""

    def __init__(
        self,
        assignment: Assignment,
        staged: StagedSubmission,
        workdir: Path,
        opts: GradeOptions,
        *,
        stop: StopFlag | None = None,
        on_progress=None,
    ):
        self.assignment, self.staged, self.workdir, self.opts = assignment, staged, workdir, opts
        self.per_test = float(opts.timeout or assignment.timeout)
        self.stop, self.on_progress = stop, on_progress
        budget = opts.budget if opts.budget is not None else DEFAULT_BUDGET
        self.deadline = time.time() + budget if budget else None
        self.oracle = OracleServer(None, new_token())
        self.notes = self.oracle.notes
        self.log = _BoundedLog()
        self.private_tmp: list[str] = []
        self.stopped_early = False

    @property
    def events(self) -> dict[str, dict]:
        return self.oracle.results

    # -- set-up --------------------------------------------------------------------------------
    def _prepare(self, box: Sandbox) -> list[str]:
        """Close everything but the allow-list, hand the child its folders; the plugin's options."""
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        config = self.workdir / "child-config.json"
        config.write_text(json.dumps(child_view(self.assignment)), encoding="utf-8")
        if box.dropped:
            os.chmod(self.workdir, 0o711)
            give(self.staged.path, box.uid)
            give(home, box.uid)
            needed = (
                [self.assignment.suite_dir, self.staged.path]
                + [p for p in (self.assignment.fixtures_dir,) if p.is_dir()]
                + child_readable_paths(self.assignment)
            )
            lock_down([self.assignment.root], box.uid, needed=needed, python=self.child_python(), engine=engine_dir())
            self.private_tmp = private_tmp_targets(box, [*needed, self.workdir, _prefix(self.child_python())])
            if "/tmp" not in self.private_tmp:
                self.notes.add(
                    "/tmp could not be made private to this run (the suite or the run lives there): "
                    "what the submission leaves there is removed at the end instead"
                )
        elif self.opts.secure:
            self.notes.add(
                "not graded as root: the submission ran as the current user, without a uid of its own, "
                "so it could read what this user can read (on Gradescope it cannot)"
            )
        return child_args(config=config)

    def child_python(self) -> str:
        """The Python of the assignment's course environment (built once, grader.envs)."""
        return str(ensure_environment(self.assignment))

    def run(self) -> tuple[dict[str, dict], str]:
        if self.opts.secure:
            from grader.judges import load_rulebook

            self.oracle.store = SnapshotStore(
                self.assignment.snapshots_dir, rules=load_rulebook(self.assignment.suite_dir)
            )
        box = open_sandbox(new_token(), limits=self.opts.limits) if self.opts.secure else Sandbox(token=new_token())
        try:
            extra = self._prepare(box)
            if not self.opts.secure:
                extra += child_args(snapshots=self.assignment.snapshots_dir)
            self._run_children(box, extra)
        finally:
            box.release()
        if self.oracle.rejected:
            self.notes.add(
                f"{self.oracle.rejected} messages on the grader's channel did not come from the grader "
                "or broke its protocol, and were ignored"
            )
        why_unrun = (
            INTERRUPTED
            if self.stop is not None and self.stop.requested
            else "stopped after the first failure"
            if self.stopped_early
            else "this test did not run"
        )
        for t in self.oracle.collected or ():
            self.events.setdefault(
                t, {"event": "result", "test": t, "outcome": "not run", "message": why_unrun, "stdout": ""}
            )
        return self.events, self.log.text()

    def _run_children(self, box: Sandbox, extra: list[str]) -> None:
        remaining: list[str] | None = None
        for _attempt in range(MAX_RESTARTS):
            suite = self.assignment.suite_dir
            args = [str(suite / t) for t in remaining] if remaining is not None else [str(suite)]
            child = _Child(self, box, args, extra)
            child.run()
            running = self.oracle.running
            if running is not None and running not in self.events:
                self._record(
                    running,
                    child.why_stopped or f"the test process died while running this test ({_describe_exit(child.rc)})",
                    "timeout" if child.timed_out else "crashed",
                )
            self.oracle.running = None
            if self.stop is not None and self.stop.requested:
                self.notes.add(f"{INTERRUPTED} ({self.stop.signal_name}) before every test had run")
                return
            if self.stopped_early:
                self.notes.add("stopped at the first graded test whose evidence failed")
                return
            if self.deadline is not None and time.time() > self.deadline:
                self.notes.add("the run used up its time budget before every test had run")
                return
            if self.oracle.collected is None:  # the suite itself could not start; scored as not run
                last = [ln for ln in self.log.text().splitlines() if ln.strip()][-6:]
                self.notes.add("the tests could not be collected" + (": " + " | ".join(last) if last else ""))
                return
            remaining = [t for t in self.oracle.collected if t not in self.events]
            if not remaining or not child.progressed or (running is None and child.rc in (0, 1) and not child.restart):
                return

    def _record(self, test_id: str, message: str, outcome: str) -> None:
        self.events[test_id] = {
            "event": "result",
            "test": test_id,
            "outcome": outcome,
            "message": message,
            "duration": 0.0,
            "stdout": "",
        }
        if self.on_progress:
            self.on_progress(self.events, self.oracle)


class _Child:
    """One pytest child: started through the sandbox keeper, its channel and output watched."""

    def __init__(self, run: SuiteRun, box: Sandbox, args: list[str], extra: list[str]):
        self.r, self.box = run, box
        self.python_prefix = child_python_prefix(run.assignment)  # pytest in the course environment
        self.args = child_pytest_args(
            run.assignment, run.staged.path, run.per_test, args, run.opts.pytest_args, extra=extra
        )
        self.rc: int | None = None
        self.timed_out = False
        self.why_stopped: str | None = None
        self.progressed = False
        self.restart = False
        self.cpu_at_start = 0.0
        self._buffer = b""
        self._disk_checked = 0.0

    def run(self) -> None:
        ev_r, ev_w = os.pipe()
        rp_r, rp_w = os.pipe()
        out_r, out_w = os.pipe()
        env = child_env(home=self.r.workdir / "home")
        env[RUN_ENV] = self.box.token
        try:
            self.proc = self._spawn_warm(env, ev_w, rp_r, out_w) if self.r.opts.use_warm else None
            if self.proc is None:
                self.proc = subprocess.Popen(
                    wrapper_command(
                        self.box,
                        [*self.python_prefix, *self.args, *child_args(oracle=f"{ev_w},{rp_r}")],
                        self.r.private_tmp,
                    ),
                    cwd=self.r.staged.path,
                    stdin=subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=out_w,
                    env=env,
                    pass_fds=(ev_w, rp_r),
                    start_new_session=True,
                )
        finally:
            for fd in (ev_w, rp_r, out_w):
                os.close(fd)
        register_keeper(self.proc.pid)
        os.set_blocking(rp_w, False)
        self._reply_fd = rp_w
        self._reply({"token": self.r.oracle.token}, raw=True)
        try:
            self._watch(ev_r, out_r)
        finally:
            self._kill_all()  # nothing the child started outlives it
            forget_keeper(self.proc.pid)
            for fd in (ev_r, out_r, rp_w):
                os.close(fd)

    def _spawn_warm(self, env: dict, ev_w: int, rp_r: int, out_w: int):
        """A test process forked from the warm server, or None (then it is started cold)."""
        from grader.warm import WarmUnavailable, server_for, warm_preload

        spec = {"uid": self.box.uid, "limits": self.box.limits, "private_tmp": list(self.r.private_tmp)}
        try:
            server = server_for([self.r.child_python(), "-I"], warm_preload(self.r.assignment), child_env(home=None))
            devnull = os.open(os.devnull, os.O_RDONLY)
            try:
                return server.spawn(
                    [*self.args, *child_args(oracle="3,4")],
                    env=env,
                    cwd=str(self.r.staged.path),
                    spec=spec,
                    stdin=devnull,
                    out=out_w,
                    extra_fds=[ev_w, rp_r],
                    fd_targets=[3, 4],
                )
            finally:
                os.close(devnull)
        except (WarmUnavailable, OSError) as err:
            self.r.notes.add(f"the warm grader could not start this run ({err}); it was started cold")
            return None

    def _watch(self, ev_r: int, out_r: int) -> None:
        sel = selectors.DefaultSelector()
        sel.register(ev_r, selectors.EVENT_READ, "events")
        sel.register(out_r, selectors.EVENT_READ, "output")
        open_fds = 2
        r = self.r
        while True:
            for key, _ in sel.select(timeout=POLL_SECONDS):
                chunk = os.read(key.fd, READ_CHUNK)
                if not chunk:
                    sel.unregister(key.fd)
                    open_fds -= 1
                elif key.data == "events":
                    self._feed_events(chunk)
                else:
                    r.log.feed(chunk)
                    if r.log.total > OUTPUT_LIMIT:
                        self._stop(f"the test process printed more than {OUTPUT_LIMIT // 2**20} MB", timeout=False)
            self.rc = self.proc.poll()
            if isinstance(r.on_progress, _Throttled):
                r.on_progress.flush_due()
            if self.rc is not None and open_fds == 0:
                break
            if self.rc is not None and open_fds and not sel.select(timeout=0):
                break  # the child is gone; a grandchild may hold the pipes open
            if r.stop is not None and r.stop.requested:
                self._stop(f"{INTERRUPTED} while this test ran", timeout=False)
                break
            if self.restart or r.stopped_early:
                self._stop("", timeout=False)
                break
            if r.deadline is not None and time.time() > r.deadline:
                self._stop("the run's time budget ran out while this test ran", timeout=True)
                break
            if self._over_disk_limit():
                self._stop(f"the run wrote more than {DISK_LIMIT // 2**30} GB to disk", timeout=False)
                break
            running = r.oracle.running
            if running is not None:
                elapsed = time.time() - r.oracle.started[running]
                if elapsed > r.per_test + GRACE_SECONDS:
                    self._stop(f"timed out after {r.per_test:g} s", timeout=True)
                    break
                used = run_cpu_seconds(self.proc.pid) - self.cpu_at_start
                if used > CPU_FACTOR * r.per_test + GRACE_SECONDS:
                    self._stop(f"used more than {CPU_FACTOR * r.per_test:g} s of CPU time", timeout=True)
                    break
        sel.close()

    def _over_disk_limit(self) -> bool:
        now = time.time()
        if now - self._disk_checked < DISK_POLL_SECONDS:
            return False
        self._disk_checked = now
        return tree_disk_use([self.r.staged.path, self.r.workdir / "home"], DISK_LIMIT) > DISK_LIMIT

    def _stop(self, why: str, *, timeout: bool) -> None:
        self.timed_out, self.why_stopped = timeout, why
        self._kill_all()
        self.rc = self.proc.wait()

    def _kill_all(self) -> None:
        """The keeper's descendants first (while it still holds the orphans), then the keeper."""
        kill_run(self.box, root_pid=self.proc.pid, keep=(self.proc.pid,))
        _kill_group(self.proc)
        kill_run(self.box, root_pid=None, keep=())

    def _feed_events(self, chunk: bytes) -> None:
        self._buffer += chunk
        if b"\n" not in self._buffer and len(self._buffer) > MAX_LINE:
            self._buffer = b""
            self.r.oracle.rejected += 1
            return
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            msg = self.r.oracle.parse(line)
            if msg is not None and not self.restart:  # a child being replaced is not heard from again
                self._handle(msg)

    def _handle(self, msg: dict) -> None:
        r = self.r
        now = time.time()
        out = r.oracle.handle(msg, now, result_filter=_clean_result)
        if out.reply is not None:
            self._reply(out.reply)
        if out.started is not None:
            self.cpu_at_start = run_cpu_seconds(self.proc.pid)
            self.progressed = True
        if out.finished is not None:
            test = out.finished
            took = now - r.oracle.started[test]
            if took > r.per_test + max(TIMING_SLACK, 0.05 * r.per_test):
                # the parent's clock decides: pytest-timeout's alarm can be swallowed (a fork
                # handler, a C extension) and a test must not pass by outlasting it
                r.events[test].update(
                    outcome="timeout", message=f"took {took:.1f} s, over its timeout of {r.per_test:g} s"
                )
            self.restart = msg.get("restart") is True  # the rest of the tests get a fresh child
            if r.opts.first_evidence_failure and r.oracle.store is not None and not r.oracle.verdict(test).ok:
                spec = r.assignment.spec_for(test)
                r.stopped_early = spec is not None and spec.points > 0
            # what the test started dies with it; while the keeper lives every process of the run
            # is below it (it is their subreaper), so the tree is enough until the run's end
            kill_tree(self.proc.pid, keep=(self.proc.pid, _test_process(self.proc.pid)))
        if out.violation is not None:
            self.restart = True
        if (out.finished is not None or out.violation is not None) and r.on_progress:
            r.on_progress(r.events, r.oracle)

    def _reply(self, msg: dict, raw: bool = False) -> None:
        data = (json.dumps(msg) + "\n").encode() if raw else self.r.oracle.frame(msg)
        try:
            os.write(self._reply_fd, data)
        except (BlockingIOError, BrokenPipeError):
            pass  # the child is not reading its answers: its own checks will time out


def _prefix(python: str) -> Path:
    path = Path(os.path.abspath(python))
    return path.parent.parent if path.parent.name == "bin" else path.parent


def _test_process(keeper_pid: int) -> int | None:
    """The pytest process under the sandbox keeper (its first child)."""
    try:
        with open(f"/proc/{keeper_pid}/task/{keeper_pid}/children", encoding="ascii") as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None
    except (OSError, ValueError):
        return None


RESULT_OUTCOMES = ("passed", "failed", "error", "skipped")
CHILD_KEYS = (
    "visibility",
    "hide_errors",
    "tags",
    "leaderboard_column",
    "leaderboard_order",
    "leaderboard_value",
    "score",
)


def _clean_result(msg: dict) -> dict:
    """Only known fields, of the right types, cut to size: the child's word, checked."""
    outcome = msg.get("outcome") if msg.get("outcome") in RESULT_OUTCOMES else "error"
    out = {
        "event": "result",
        "test": msg["test"],
        "outcome": outcome,
        "message": str(msg.get("message", ""))[:MAX_MESSAGE],
        "stdout": str(msg.get("stdout", ""))[:MAX_STDOUT],
    }
    try:
        out["duration"] = float(msg.get("duration", 0.0))
    except (TypeError, ValueError):
        out["duration"] = 0.0
    for k in CHILD_KEYS:
        v = msg.get(k)
        if k in ("score", "leaderboard_value"):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[k] = float(v)
        elif k == "tags":
            if isinstance(v, list):
                out[k] = [str(x)[:100] for x in v[:20]]
        elif k == "hide_errors":
            if isinstance(v, (str, bool)) and v:
                out[k] = v if isinstance(v, bool) else v[:1000]
        elif isinstance(v, str):
            out[k] = v[:1000]
    return out


def pytest_command(
    assignment: Assignment, staged_path: Path, per_test: float, targets: list[str], extra_args=(), *, extra=(), **flags
) -> list[str]:
    """The test process's command line, in the course environment; ``flags`` are plugin options
    (``grader.childargs``)."""
    return [
        *child_python_prefix(assignment),
        *child_pytest_args(assignment, staged_path, per_test, targets, extra_args, extra=extra, **flags),
    ]


def child_pytest_args(
    assignment: Assignment, staged_path: Path, per_test: float, targets: list[str], extra_args=(), *, extra=(), **flags
) -> list[str]:
    """pytest's arguments for a test process (what follows ``python -m pytest``)."""
    ini = staged_path.parent / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")  # keep any pyproject/pytest.ini around out of the run
    return [
        *targets,
        "-p",
        "grader.plugin",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:unraisableexception",  # its two gc.collect() at exit cost 0.5 s a run and decide nothing
        "-c",
        str(ini),
        "--rootdir",
        str(assignment.suite_dir),
        "-q",
        "-rN",
        "--no-header",
        "--import-mode=importlib",
        "--assert=plain",  # a message says what the test says, never pytest's introspection of it
        *child_args(assignment=assignment.id, submission=staged_path, staged=True, **flags),
        f"--timeout={per_test:g}",
        "--timeout-method=signal",
        *extra,
        *extra_args,
    ]


def child_env(home: Path | None = None) -> dict[str, str]:
    """A clean environment: no user PYTHONPATH, nothing reaching the network, quiet libraries."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "PYTEST_", "LMGRADE_")) and k not in SECRET_ENV
    }
    env.update(
        {
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "MPLBACKEND": "Agg",
            "WANDB_MODE": "disabled",
            "WANDB_SILENT": "true",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "TQDM_DISABLE": "1",  # progress bars would fill the "your code printed" section
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
            # pyarrow's jemalloc (pandas, datasets) starts a background thread at import, and a process
            # with a thread cannot be forked safely: the warm grader would fall back to cold starts
            "JE_ARROW_MALLOC_CONF": "background_thread:false",
        }
    )
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


def tail_of(path: Path) -> str:
    try:
        data = path.read_bytes()[-LOG_TAIL:]
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")
