"""Scoring: turn what a grading run saw into points, per the rubric.

The rubric decides the points, the visibility, the question number and the tags of every test.
The test process only reports; what it says can take points away, never give them. A test earns
its points only if the test process reported it passed **and** the parent's own record shows
every value the reference recorded for it sent and matched (``OracleServer.verdict``). Tests the
rubric lists as ``child_judged`` (a foreign Gradescope suite's property tests, the toy's
``@partial_credit``) are the only exception, and ``lmgrade list`` shows their share.

``GradeReport.evidence_score`` is what the same run would score if every outcome the test process
reported were "passed": the most a submission that rewrites its own process could claim. It
must equal the real score's upper bound on every mutant and be 0 on the template.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from grader.assignment import Assignment, TestSpec
from grader.oracle import OracleServer

MAX_MESSAGE = 4000  # characters of a test's message kept, in the test process and in the parent
VISIBILITY_ORDER = ("visible", "after_published", "after_due_date", "hidden")  # least to most restrictive


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
    extra: dict = field(default_factory=dict)  # number, tags, hide_errors, leaderboard
    evidence_score: float = 0.0  # what this test would earn had the test process said "passed"
    evidence_ok: bool = False  # the parent's record alone would let it pass

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
    interrupted: bool = False

    @property
    def score(self) -> float:
        return round(sum(t.score for t in self.tests), 6)

    @property
    def max_score(self) -> float:
        return round(sum(t.max_score for t in self.tests), 6)

    @property
    def evidence_score(self) -> float:
        return round(sum(t.evidence_score for t in self.tests), 6)


def score(
    assignment: Assignment,
    events: dict[str, dict],
    notes: list[str],
    elapsed: float,
    label: str,
    oracle: OracleServer | None = None,
    static: dict | None = None,
) -> GradeReport:
    """Points for each rubric test from the run's events, judged by the parent's evidence.

    ``static`` maps a rule's name to what the parent found in the submission's source that breaks
    it (``grader.rules.staged_findings``): every test the rule covers fails, whatever ran.
    """
    by_base: dict[str, list[dict]] = {}
    for test_id, ev in events.items():
        by_base.setdefault(test_id.split("[", 1)[0], []).append(ev)
    results: list[TestResult] = []
    listed: set[str] = set()
    for spec in assignment.tests:
        listed.add(spec.test_id)
        cases = by_base.get(spec.test_id)
        if not cases:
            results.append(
                _result(
                    spec,
                    spec.test_id,
                    {"outcome": "not run", "message": "this test did not run"},
                    spec.points,
                    assignment,
                    oracle,
                )
            )
            continue
        share = spec.points / len(cases)
        for ev in sorted(cases, key=lambda e: e["test"]):
            results.append(_result(spec, ev["test"], ev, share, assignment, oracle))
    for base, cases in by_base.items():
        if base in listed:
            continue
        for ev in cases:  # not in the rubric: no points, whatever the test process claims
            spec = TestSpec(test_id=base, points=0.0, question="", question_name="")
            results.append(_result(spec, ev["test"], ev, 0.0, assignment, oracle))
    _apply_requirements(assignment, results)
    _apply_static_rules(assignment, results, static or {})
    return GradeReport(assignment=assignment, submission=label, tests=results, notes=notes, execution_time=elapsed)


def _apply_static_rules(assignment: Assignment, results: list[TestResult], static: dict) -> None:
    if not static:
        return
    by_name = {r.name: r for r in assignment.rules}
    for r in results:
        broken = [name for name in static if by_name[name].applies_to(r.test_id)]
        if not broken:
            continue
        rule = by_name[broken[0]]
        finding = static[rule.name][0]
        r.outcome, r.score, r.evidence_score, r.evidence_ok = "failed", 0.0, 0.0, False
        r.message = f"{rule.message} ({finding.describe()})"


def _apply_requirements(assignment: Assignment, results: list[TestResult]) -> None:
    """A test whose rubric line ``requires`` others earns its points only if they pass too
    (CMU 11-667: a public unit test's points need the hidden checks of the same function)."""
    by_base: dict[str, list[TestResult]] = {}
    for r in results:
        by_base.setdefault(r.test_id.split("[", 1)[0], []).append(r)
    for spec in assignment.tests:
        if not spec.requires:
            continue
        failing = [t for t in spec.requires if not all(r.passed for r in by_base.get(t, []))]
        failing_evidence = [t for t in spec.requires if not all(r.evidence_ok for r in by_base.get(t, []))]
        for r in by_base.get(spec.test_id, []):
            if failing and r.score > 0:
                r.score = 0.0
                r.message = (
                    r.message + "; " if r.message else ""
                ) + f"its points also need {failing[0].split('::')[-1]} ({failing[0].split('/')[0]}) to pass"
            if failing_evidence:
                r.evidence_score, r.evidence_ok = 0.0, False


def _result(
    spec: TestSpec, test_id: str, ev: dict, max_score: float, assignment: Assignment, oracle: OracleServer | None
) -> TestResult:
    outcome = ev.get("outcome", "not run")
    message = ev.get("message", "")
    child_judged = assignment.is_child_judged(test_id)
    evidence_ok, why = _evidence(test_id, oracle, child_judged, max_score)
    if outcome == "passed" and not evidence_ok:
        outcome, message = "failed", why
    earned = max_score if outcome == "passed" else 0.0
    claimed = ev.get("score")
    if child_judged and outcome == "passed" and isinstance(claimed, (int, float)):
        # @partial_credit of a child-judged test: the test's own claim, clamped to the rubric
        earned = min(max(float(claimed), 0.0), max_score)
        if earned < max_score:
            message = message or f"partial credit: {earned:g} of {max_score:g}"
    extra = {k: ev[k] for k in ("leaderboard_column", "leaderboard_order", "leaderboard_value") if k in ev}
    if ev.get("hide_errors"):
        extra["hide_errors"] = ev["hide_errors"]  # the child may only hide more
    if child_judged and ev.get("tags"):
        extra["tags"] = ev["tags"]
    return TestResult(
        test_id=test_id,
        outcome=outcome,
        message=message,
        stdout=ev.get("stdout", ""),
        duration=float(ev.get("duration", 0.0)),
        score=round(earned, 6),
        max_score=round(max_score, 6),
        question=spec.question,
        question_name=spec.question_name,
        visibility=_visibility(assignment.visibility_for(test_id), ev.get("visibility")),
        extra=extra,
        evidence_score=round(max_score if evidence_ok else 0.0, 6),
        evidence_ok=evidence_ok,
    )


def _evidence(test_id: str, oracle: OracleServer | None, child_judged: bool, max_score: float) -> tuple[bool, str]:
    """(does the parent's record let the test earn its points, why not)."""
    if oracle is None:
        return False, "this test did not run"
    if oracle.store is None:
        return True, ""  # a trusted run (recording, benchmarks): the test process compared itself
    verdict = oracle.verdict(test_id)
    if verdict.ok:
        return True, ""
    if not verdict.recorded and (child_judged or max_score == 0):
        return True, ""
    return False, verdict.message


def _visibility(rubric: str, claimed) -> str:
    """The rubric's visibility, or a more restrictive one the test itself asked for."""
    if claimed in VISIBILITY_ORDER and VISIBILITY_ORDER.index(claimed) > VISIBILITY_ORDER.index(rubric):
        return claimed
    return rubric
