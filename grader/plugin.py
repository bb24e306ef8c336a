"""The lmgrade pytest plugin: ``sub`` and ``snapshot`` fixtures, seeding, rules, outcomes.

How it works:

* ``--submission DIR`` names the folder under test. It is staged (``grader.submission``) and
  put first on ``sys.path``; the ``sub`` fixture imports its modules by the rubric's aliases.
* Before each test, ``random``, ``numpy`` and ``torch`` are seeded from the test's name, so the
  reference (when recording) and a submission (when grading) see the same inputs.
* ``snapshot.check(key, value)`` records the value (``--lmgrade-record VARIANT``) or compares it
  with what the reference recorded, in whichever accepted variant matches the whole test.
* The rubric's rules forbid operations while the tests they name run (``grader.guards``).
* ``--lmgrade-oracle W,R`` (secure grading, ``grader.oracle``): events go to the grading parent
  over a pipe, and ``snapshot.check`` sends each value there to be compared; this process
  never sees an expected value. ``--lmgrade-config FILE`` then gives the parts of the rubric a
  test process needs (module names, rules), since the rubric itself is closed to it.
* ``--lmgrade-outcomes FILE`` (recording, trusted runs) streams the same events to a file.
* Before the first test, a fingerprint of the grader's, pytest's, torch's and numpy's functions
  is taken (``grader.tamper``); a student module that replaces them at import has them put
  back, and a test during which they are replaced fails.

The plugin itself never decides points: the parent scores from the rubric. Without either
option (a student's local ``pytest``) it compares with the public snapshots and adds messages.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from grader import childargs, compat, gradescope
from grader.assignment import Assignment, RubricError, assignment_from_child_view, is_public, load_assignment
from grader.compare import Tolerance
from grader.judges import Evidence, RuleBook, load_rulebook
from grader.oracle import OracleClient
from grader.report import MAX_MESSAGE
from grader.seeding import seed_everything, seed_for
from grader.snapshots import SnapshotStore, SnapshotWriter
from grader.submission import (
    Modules,
    StagedSubmission,
    SubmissionError,
    describe_exception,
    stage,
    student_location,
)
from grader.tamper import Fingerprint, HookFingerprint
from grader.values import UnsupportedValue, decode, encode

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5
# On a GPU with TF32 matmuls, float32 products carry ~1e-3 relative error (10-bit mantissa);
# the floor below was chosen from the spread measured between CPU fp32 and TF32 runs.
TF32_FLOOR = Tolerance(rtol=2e-3, atol=2e-3)
MAX_CAPTURED = 2000


# -- options and configuration -------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    childargs.add_options(parser.getgroup("lmgrade"))


@dataclass
class _State:
    assignment: Assignment | None = None
    suite_root: Path | None = None
    staged: StagedSubmission | None = None
    modules: Modules | None = None
    checker: Checker | None = None
    outcomes: object | None = None
    oracle: OracleClient | None = None
    fingerprint: Fingerprint | None = None
    hooks: HookFingerprint | None = None
    pid: int = 0
    device: str = "cpu"
    setup_error: str | None = None
    static_rules: dict | None = None  # local runs: rule name -> findings in the source
    record_failures: list[str] = field(default_factory=list)
    results: dict[str, dict] = field(default_factory=dict)
    tmp: tempfile.TemporaryDirectory | None = None


_STATE_KEY = pytest.StashKey[_State]()


def pytest_configure(config: pytest.Config) -> None:
    state = _State(device=config.getoption("lmgrade_device"), pid=os.getpid())
    config.stash[_STATE_KEY] = state
    if config.getoption("lmgrade_oracle"):
        state.oracle = OracleClient.connect(config.getoption("lmgrade_oracle"))
    path = config.getoption("lmgrade_outcomes")
    if path:
        state.outcomes = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed at unconfigure


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE_KEY, None)
    if state and state.outcomes:
        state.outcomes.close()
    if state and state.tmp:
        state.tmp.cleanup()


def pytest_report_header(config: pytest.Config) -> list[str]:
    sub = config.getoption("lmgrade_submission")
    mode = (
        f"recording variant {config.getoption('lmgrade_record')}" if config.getoption("lmgrade_record") else "grading"
    )
    return [f"lmgrade: {mode} submission {sub or '(none given: pass --submission DIR)'}"]


def _emit(state: _State, event: dict) -> None:
    _exit_if_forked(state)
    if state.oracle:
        state.oracle.send(event)
    elif state.outcomes:
        state.outcomes.write(json.dumps(event) + "\n")


def _exit_if_forked(state: _State) -> None:
    """A copy of this process made by ``os.fork`` in student code must not run the suite on."""
    if state.pid and os.getpid() != state.pid:
        os._exit(0)


# -- collection: find the assignment, stage the submission ---------------------------------


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[_STATE_KEY]
    if not items:
        return
    try:
        _setup(state, config, items)
    except (RubricError, SubmissionError, OSError) as err:
        state.setup_error = str(err)
    for item in items:
        item.stash[_TEST_ID] = _test_id(state, item)
    _emit(state, {"event": "collected", "tests": [item.stash[_TEST_ID] for item in items]})
    _warm_up_guards(state, items)
    if not isinstance(state.checker, LocalChecker):
        # graded runs: the suite is imported and no student code has run yet. A student's local
        # run has nothing to protect from itself, and restoring after every test costs ~10 ms.
        state.fingerprint = Fingerprint()
        state.hooks = HookFingerprint(config.pluginmanager)


def _warm_up_guards(state: _State, items: list[pytest.Item]) -> None:
    """Entering a torch mode the first time imports torch._dynamo (about 2 s): do it now, before
    any test's timeout runs, rather than inside the first guarded test (where a timeout could
    also cut the import in half and break later tests)."""
    guarded = (
        state.static_rules is None
        and state.assignment is not None
        and any(state.assignment.rules_for(i.stash[_TEST_ID]) for i in items)
    )
    if guarded or "grader.properties" in sys.modules:
        import torch

        from grader.guards import count_ops

        count_ops(torch.add, torch.ones(1), 1)  # enters a TorchDispatchMode once


_TEST_ID = pytest.StashKey[str]()


def _setup(state: _State, config: pytest.Config, items: list[pytest.Item]) -> None:
    state.suite_root = _find_suite_root(Path(items[0].path))
    assignment_id = config.getoption("lmgrade_assignment") or (state.suite_root.name if state.suite_root else None)
    if state.suite_root is None or assignment_id is None:
        raise RubricError("no assignment.yaml above the collected tests; pass --lmgrade-assignment")
    if config.getoption("lmgrade_config"):
        view = json.loads(Path(config.getoption("lmgrade_config")).read_text(encoding="utf-8"))
        state.assignment = assignment_from_child_view(view)
    else:
        state.assignment = load_assignment(assignment_id, root=_project_root_for(state.suite_root, assignment_id))
    submission = config.getoption("lmgrade_submission") or os.environ.get("LMGRADE_SUBMISSION")
    if not submission:
        raise SubmissionError("no submission given: run pytest with --submission PATH/TO/YOUR/FOLDER")
    sub_path = Path(submission).resolve()
    if config.getoption("lmgrade_staged"):
        state.staged = StagedSubmission.load(sub_path)
    else:
        state.tmp = tempfile.TemporaryDirectory(prefix="lmgrade-stage-")
        state.staged = stage(state.assignment, sub_path, Path(state.tmp.name))
    sys.path.insert(0, str(state.staged.path))
    os.chdir(state.staged.path)  # student code opens relative paths (data/, configs/) from its folder
    compat.prepare(
        state.assignment,
        cuda=state.staged.cuda,
        device=state.device,
        note=lambda text: _emit(state, {"event": "note", "text": text}),
    )
    state.modules = Modules(state.staged, state.assignment.fixtures_dir)
    state.modules._lmgrade_state = state
    state.checker = _choose_checker(state, config)
    for spec in filter(None, (config.getoption("lmgrade_live") or "").split(",")):
        alias, _, name = spec.partition("=")
        if name in sys.modules:
            state.modules.live[alias] = sys.modules[name]
    if isinstance(state.checker, LocalChecker):
        # a student's local run: the handout's rules are read from the source, as the grading
        # parent reads them, instead of guarding torch's dispatcher (which imports torch._dynamo)
        from grader.rules import staged_findings

        state.static_rules = staged_findings(state.assignment, state.staged)


def _choose_checker(state: _State, config: pytest.Config) -> Checker:
    """How ``snapshot.check``/``judge`` work in this process, decided once: recording the
    reference, asking the grading parent, or comparing here (a student's local run)."""
    variant = config.getoption("lmgrade_record")
    snap_dir = Path(config.getoption("lmgrade_snapshots") or state.assignment.snapshots_dir)
    rules = load_rulebook(state.suite_root)
    if variant:
        return RecordingChecker(SnapshotWriter(snap_dir, variant), rules)
    if state.oracle is not None and not config.getoption("lmgrade_snapshots"):
        return OracleChecker(state.oracle)
    return LocalChecker(SnapshotStore(snap_dir, rules=rules))


def _find_suite_root(path: Path) -> Path | None:
    for parent in [path.parent, *path.parents]:
        if (parent / "assignment.yaml").is_file():
            return parent
    return None


def _project_root_for(suite_root: Path, assignment_id: str) -> Path:
    """The suite lives at <root>/test_suites/<id>; a handout unpacks it elsewhere."""
    if suite_root.parent.name == "test_suites":
        return suite_root.parent.parent
    from grader import project_root

    return project_root()


def _test_id(state: _State, item: pytest.Item) -> str:
    path = Path(item.path)
    rel = (
        path.relative_to(state.suite_root).as_posix()
        if state.suite_root and path.is_relative_to(state.suite_root)
        else path.name
    )
    return rel + "::" + "::".join(item.nodeid.split("::")[1:])


# -- per-test: seed, rules, snapshot bookkeeping --------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    state = item.config.stash[_STATE_KEY]
    _emit(state, {"event": "start", "test": item.stash[_TEST_ID], "time": time.time()})
    _note_tampering(state, _restore(state), during_test=False)
    gradescope.reset_dunders(item)
    if state.setup_error:
        pytest.fail(state.setup_error, pytrace=False)
    compat.before_test()
    seed_everything(seed_for(item.stash[_TEST_ID]))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    from grader.guards import forbid

    state = item.config.stash[_STATE_KEY]
    test_id = item.stash[_TEST_ID]
    seed_everything(seed_for(test_id))  # again: fixture set-up may have drawn random numbers
    rules = state.assignment.rules_for(test_id) if state.assignment else ()
    if state.static_rules is not None:
        broken = [r for r in rules if r.name in state.static_rules]
        if broken:
            pytest.fail(f"{broken[0].message} ({state.static_rules[broken[0].name][0].describe()})", pytrace=False)
        rules = ()
    with forbid([(r.name, r.message, r.forbid) for r in rules]) as recorder:
        try:
            result = yield
        finally:
            violations = list(recorder.violations)
            _exit_if_forked(state)
    replaced = _restore(state)
    if violations:
        pytest.fail(violations[0].describe(), pytrace=False)
    if replaced:
        _note_tampering(state, replaced, during_test=True)
    return result


def _restore(state: _State) -> list[str]:
    replaced = state.fingerprint.restore() if state.fingerprint is not None else []
    return replaced + (state.hooks.restore() if state.hooks is not None else [])


def _note_tampering(state: _State, replaced: list[str], *, during_test: bool) -> None:
    """Replaced grader/pytest/torch/numpy functions were put back; say so, and fail a test
    during which it happened (its verdict may have been computed with them)."""
    if not replaced:
        return
    names = ", ".join(replaced[:5]) + (f" and {len(replaced) - 5} more" if len(replaced) > 5 else "")
    _emit(state, {"event": "note", "text": f"the submission replaced {names}; the originals were put back"})
    if during_test:
        pytest.fail(
            f"the submission replaced {names} while this test ran; the grader's and the "
            "libraries' functions must not be changed",
            pytrace=False,
        )


@pytest.fixture
def sub(request: pytest.FixtureRequest) -> Modules:
    """The submission's modules by alias: ``sub.model.DecoderLM``."""
    state = request.config.stash[_STATE_KEY]
    if state.modules is None:
        pytest.fail(state.setup_error or "lmgrade is not configured for this run", pytrace=False)
    return _FailingModules(state.modules)


class _FailingModules:
    """Turns SubmissionError into a clean test failure (no grader traceback)."""

    def __init__(self, modules: Modules):
        object.__setattr__(self, "_m", modules)

    def __getattr__(self, name: str):
        try:
            value = getattr(self._m, name)
        except SubmissionError as err:
            pytest.fail(str(err), pytrace=False)
        finally:
            _after_import(self._m)
        if name in ("path", "fixtures"):
            return value
        return _FailingProxy(value)


def _after_import(modules: Modules) -> None:
    """Student modules may have run arbitrary code at import: undo replaced functions now,
    before the test goes on to use them (not a fault of this test: noted, not failed)."""
    state = getattr(modules, "_lmgrade_state", None)
    compat.after_import()
    if state is not None:
        _note_tampering(state, _restore(state), during_test=False)


class _FailingProxy:
    def __init__(self, proxy):
        object.__setattr__(self, "_p", proxy)

    def __getattr__(self, name: str):
        try:
            return getattr(self._p, name)
        except SubmissionError as err:
            pytest.fail(str(err), pytrace=False)

    def __setattr__(self, name, value):
        setattr(self._p, name, value)


@pytest.fixture
def device(request: pytest.FixtureRequest) -> str:
    """ "cpu", or "cuda" when the suite runs with --lmgrade-device cuda."""
    return request.config.stash[_STATE_KEY].device


@pytest.fixture
def snapshot(request: pytest.FixtureRequest):
    state = request.config.stash[_STATE_KEY]
    if state.checker is None:
        pytest.fail(state.setup_error or "lmgrade is not configured for this run", pytrace=False)
    snap = Snapshot(state, request.node.stash[_TEST_ID])
    yield snap
    snap.finish(request.node)


class Snapshot:
    """The test's link to its evidence: ``check`` compares a value with the reference's,
    ``judge`` has a recorded rule applied to a value (``grader.judges``)."""

    def __init__(self, state: _State, test_id: str):
        self._state = state
        self._checker: Checker = state.checker
        self.test_id = test_id
        self.checked: list[str] = []
        self.failed = False
        self.reveal = is_public(test_id)
        self.alive: list[str] = self._checker.variants()
        self.seen: dict = {}

    def check(
        self,
        key: str,
        value,
        *,
        rtol: float | None = None,
        atol: float | None = None,
        mask=None,
        hint: str | None = None,
        dtypes=None,
    ) -> None:
        """``value`` must match what the reference gave for ``key`` (shape, dtype, values).
        A tensor's dtype must be the reference's exactly, unless ``dtypes`` lists the accepted ones."""
        __tracebackhide__ = True
        self._send(key, value, _tolerance(self._state, rtol, atol), mask, hint, None, None, dtypes)

    def judge(self, key: str, value, rule: str, /, *, hint: str | None = None, **params) -> None:
        """``value`` must satisfy ``rule`` (recorded with ``params`` from the reference)."""
        __tracebackhide__ = True
        try:
            json.dumps(params)
        except (TypeError, ValueError) as err:
            raise TypeError(f"snapshot.judge parameters must be plain JSON values: {err}") from None
        self._send(key, value, Tolerance(0.0, 0.0), None, hint, rule, params)

    def _send(self, key, value, tol, mask, hint, rule, params, dtypes=None) -> None:
        __tracebackhide__ = True
        try:
            tree, arrays = encode(value)
        except UnsupportedValue as err:
            self.failed = True
            pytest.fail(_not_implemented(value) or f"`{key}`: {err}", pytrace=False)
        self.checked.append(key)
        problem = self._checker.send(
            self,
            key,
            tree,
            arrays,
            tol=tol,
            mask=mask,
            hint=hint,
            rule=rule,
            params=params,
            dtypes=tuple(str(d).removeprefix("torch.") for d in dtypes) if dtypes else None,
        )
        if problem:
            self.failed = True
            pytest.fail(problem, pytrace=False)

    def finish(self, node: pytest.Item) -> None:
        self._checker.finish(self, node)


def _not_implemented(value) -> str | None:
    """A starter's placeholder body returns ``...`` (alone, or in the tuple it returns, as CMU's
    ``q = ...; kT = ...; v = ...; return q, kT, v``): say so plainly."""
    if value is Ellipsis or (isinstance(value, (tuple, list)) and any(v is Ellipsis for v in value)):
        return "not implemented yet: the function returned `...` (the starter's placeholder)"
    return None


class Checker:
    """Where checked values go. One of three, chosen once per process (``_choose_checker``)."""

    def variants(self) -> list[str]:
        return []

    def send(self, snap: Snapshot, key: str, tree, arrays, **spec) -> str | None:
        raise NotImplementedError

    def finish(self, snap: Snapshot, node: pytest.Item) -> None:
        return None


class RecordingChecker(Checker):
    """``lmgrade record``: store the reference's values; the reference must pass its own rules."""

    def __init__(self, writer: SnapshotWriter, rules: RuleBook):
        self.writer, self.rules = writer, rules

    def send(self, snap, key, tree, arrays, *, tol, mask, hint, rule, params, dtypes=None):
        mask_arr = None if mask is None else np.asarray(_to_numpy(mask), dtype=bool)
        self.writer.add(snap.test_id, key, tree, arrays, tol, mask_arr, hint, rule=rule, params=params, dtypes=dtypes)
        value = decode(tree, arrays)
        if rule is not None:
            if rule not in self.rules:
                return f"`{key}`: no rule named {rule!r} (grader.judges or the suite's judges.py)"
            problems = self.rules.evaluate(
                rule, Evidence(key=key, value=value, params=params or {}, expected=value, seen=snap.seen, reveal=True)
            )
            if problems:
                return "the reference does not satisfy its own rule: " + "; ".join(problems)
        snap.seen[key] = value
        return None

    def finish(self, snap, node):
        if not snap.checked:
            self.writer.add_empty(snap.test_id)


class OracleChecker(Checker):
    """Secure grading: every value goes to the parent, which compares and keeps the record."""

    def __init__(self, client: OracleClient):
        self.client = client

    def send(self, snap, key, tree, arrays, **spec):
        answer = self.client.ask(snap.test_id, key, tree, arrays)
        return None if answer.get("ok") else str(answer.get("message") or f"`{key}` does not match")


class LocalChecker(Checker):
    """A student's local run (and trusted benchmark runs): compare here, with the snapshots
    this process can read (a handout holds the public ones only)."""

    def __init__(self, store: SnapshotStore):
        self.store = store

    def variants(self):
        return list(self.store.variants)

    def send(self, snap, key, tree, arrays, **spec):
        alive, problems = self.store.match(
            snap.test_id, snap.alive, key, tree, arrays, reveal=snap.reveal, seen=snap.seen
        )
        snap.seen[key] = decode(tree, arrays)
        if problems is None:
            return (
                f"no snapshot recorded for key `{key}` of {snap.test_id}; "
                f"run `lmgrade record {snap._state.assignment.id}`"
            )
        if problems:
            return "; ".join(problems)
        snap.alive = alive
        return None

    def finish(self, snap, node):
        if snap.failed or not snap.alive:
            return
        rep = getattr(node, "_lmgrade_call_report", None)
        if rep is not None and not rep.passed:
            return
        expected = self.store.expected_keys(snap.test_id, snap.alive[0]) or []
        missing = [k for k in expected if k not in snap.checked]
        if missing:
            pytest.fail(f"the test ended before checking {', '.join(f'`{k}`' for k in missing)}", pytrace=False)


def _tolerance(state: _State, rtol: float | None, atol: float | None) -> Tolerance:
    tol = Tolerance(DEFAULT_RTOL if rtol is None else rtol, DEFAULT_ATOL if atol is None else atol)
    if state.device == "cuda" and (tol.rtol or tol.atol):
        tol = Tolerance(max(tol.rtol, TF32_FLOOR.rtol), max(tol.atol, TF32_FLOOR.atol))
    return tol


def _to_numpy(x):
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:
        pass
    return np.asarray(x)


# -- reports: one outcome per test ------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    _exit_if_forked(item.config.stash[_STATE_KEY])
    if report.when == "call":
        item._lmgrade_call_report = report
    if call.excinfo is not None and report.failed:
        report._lmgrade_message = _message(call.excinfo, item)
        if _leaves_process_unsafe(call.excinfo):
            item._lmgrade_restart = True
    return report


def _leaves_process_unsafe(excinfo: pytest.ExceptionInfo) -> bool:
    """Running out of memory or time can interrupt an import or a library's set-up half-way;
    the tests after such a failure get a fresh process."""
    exc = excinfo.value
    if isinstance(exc, (MemoryError, RecursionError)):
        return True
    return isinstance(exc, pytest.fail.Exception) and str(exc.msg).startswith("Timeout")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _PENDING.setdefault(report.nodeid, []).append(report)


_PENDING: dict[str, list[pytest.TestReport]] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    try:
        return (yield)
    finally:
        _finish(item.config.stash[_STATE_KEY], item, _PENDING.pop(item.nodeid, []))


def _finish(state: _State, item: pytest.Item, reports: list[pytest.TestReport]) -> None:
    test_id = item.stash[_TEST_ID]
    outcome, message = "passed", ""
    for rep in reports:
        if rep.failed:
            outcome = "failed" if rep.when == "call" else "error"
            message = getattr(rep, "_lmgrade_message", None) or _longrepr_text(rep)
            if rep.when != "call":
                message = f"{'set-up' if rep.when == 'setup' else 'tear-down'} failed: {message}"
            break
        if rep.skipped and outcome == "passed":
            outcome = "skipped"
            message = _skip_reason(rep)
    captured = "".join(getattr(rep, "capstdout", "") + getattr(rep, "capstderr", "") for rep in reports)[-MAX_CAPTURED:]
    if isinstance(state.checker, RecordingChecker) and outcome in ("failed", "error"):
        state.record_failures.append(f"{test_id}: {outcome}: {message}")
    decor = gradescope.decorator_values(item)
    event = {
        "event": "result",
        "test": test_id,
        "outcome": outcome,
        "message": message[:MAX_MESSAGE],
        "duration": sum(r.duration for r in reports),
        "stdout": captured,
        **decor,
    }
    if getattr(item, "_lmgrade_restart", False):
        event["restart"] = True
    state.results[test_id] = event
    _emit(state, event)


def _message(excinfo: pytest.ExceptionInfo, item: pytest.Item) -> str:
    from grader.guards import ForbiddenOperation

    exc = excinfo.value
    if isinstance(exc, pytest.fail.Exception):
        return str(exc.msg)
    if isinstance(exc, ForbiddenOperation):
        return str(exc)
    where = _student_location(excinfo, item)
    if isinstance(exc, NotImplementedError):
        return f"not implemented yet: NotImplementedError{where}" + (f": {exc}" if str(exc) else "")
    if isinstance(exc, AssertionError) and not where:  # the test's own assertion
        return str(exc).strip() or "assertion failed"
    if (
        isinstance(exc, (TypeError, AttributeError))
        and not where
        and ("'ellipsis'" in str(exc) or "'NoneType'" in str(exc))
    ):  # the test used a placeholder's result
        returned = "`...`" if "'ellipsis'" in str(exc) else "None"
        return f"not implemented yet? a function returned {returned} ({type(exc).__name__}: {exc})"
    return describe_exception(exc, where)  # from student code, or a library it called


def _student_location(excinfo: pytest.ExceptionInfo, item: pytest.Item) -> str:
    return student_location(excinfo.tb, item.config.stash[_STATE_KEY].staged)


def _longrepr_text(rep: pytest.TestReport) -> str:
    text = rep.longreprtext or ""
    lines = [ln for ln in text.splitlines() if ln.startswith("E ")]
    return "\n".join(ln[1:].strip() for ln in lines) if lines else text[-MAX_MESSAGE:]


def _skip_reason(rep: pytest.TestReport) -> str:
    if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3:
        return str(rep.longrepr[2]).removeprefix("Skipped: ")
    return "skipped"


# -- gradescope-utils decorators ----------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    return gradescope.run_with_own_setters(pyfuncitem)


# -- end of session: write recorded snapshots -----------------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_STATE_KEY, None)
    if state is None or not isinstance(state.checker, RecordingChecker):
        return
    if state.setup_error:
        session.config._lmgrade_record_error = state.setup_error
        return
    if exitstatus not in (0, pytest.ExitCode.OK) and not state.record_failures:
        session.config._lmgrade_record_error = f"pytest ended with {pytest.ExitCode(exitstatus).name}"
        return
    if state.record_failures:
        session.config._lmgrade_record_error = "the reference fails these tests:\n  " + "\n  ".join(
            state.record_failures
        )
        session.exitstatus = 1
        return
    state.checker.writer.write()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE_KEY, None)
    err = getattr(config, "_lmgrade_record_error", None)
    if err:
        terminalreporter.write_line(f"lmgrade: snapshots NOT written: {err}", red=True)
    elif state and isinstance(state.checker, RecordingChecker):
        terminalreporter.write_line(f"lmgrade: snapshots written for variant {state.checker.writer.variant}")
    if state and state.staged and state.staged.notes:
        for note in state.staged.notes:
            terminalreporter.write_line(f"lmgrade: {note}")
    if state and state.setup_error:
        terminalreporter.write_line(f"lmgrade: {state.setup_error}", red=True)
