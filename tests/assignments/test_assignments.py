"""Every assignment: reference full marks, template zero, every mutant caught, every correct
alternative at full marks, files in sync, and every point decided by the grading parent.

The evidence score (``GradeReport.evidence_score``) is what a submission that rewrites its own
test process to report every test as passed would get: it must be 0 for the template and the
starter-style templates, and below full marks for every mutant.

These grade real submissions through the same path Gradescope uses (a child pytest process
per submission), so they are the slowest tests; each assignment's gradings run in parallel.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from grader.assignment import list_assignments, load_assignment
from grader.checksuite import collected_tests
from grader.mutants import check, grade_mutant, list_alternatives, list_mutants, load_variants
from grader.runner import grade
from grader.snapshots import _sha256, parent_decided_points
from grader.template import check_template, starter_style

ASSIGNMENTS = list_assignments()
MIN_MUTANTS = {"cmu_11667_a2": 15, "mila_ift6135_a2": 15, "cmu_10423_hw3": 12, "duke_ece661_hw3": 12}


_GRADED: dict[str, tuple] = {}  # per worker process: pytest may interleave the params' tests


@pytest.fixture(params=ASSIGNMENTS)  # under xdist, one worker per assignment (tests/conftest.py)
def graded(request, tmp_path_factory):
    if request.param not in _GRADED:
        _GRADED[request.param] = _grade_everything(request.param, tmp_path_factory)
    return _GRADED[request.param]


def _grade_everything(assignment_id: str, tmp_path_factory):
    """Grade reference, template, starter-style templates, every mutant and every alternative of
    one assignment (2 at a time), each in full: the evidence of every test is needed."""
    a = load_assignment(assignment_id)
    tmp = tmp_path_factory.mktemp(f"starters-{a.id}")
    tmp.chmod(0o755)
    subjects = {"reference": lambda: grade(a, a.reference_dir), "template": lambda: grade(a, a.template_dir)}
    for name, body in (("return", "return ..."), ("pass", "pass")):
        subjects[f"starter:{name}"] = lambda n=name, b=body: grade(a, starter_style(a.template_dir, tmp / n, b))
    for m in list_mutants(a):
        # stop at the first test whose evidence fails: that test shows the mutant loses points,
        # even had it rewritten its test process (its evidence, not its outcome, failed)
        subjects[f"mutant:{m.name}"] = lambda m=m: grade_mutant(a, m, first_evidence_failure=True).report
    for m in list_alternatives(a):
        subjects[f"alternative:{m.name}"] = lambda m=m: grade_mutant(a, m).report
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = dict(zip(subjects, pool.map(lambda run: run(), subjects.values())))
    return a, reports


def _failures(report):
    return [(t.test_id, t.outcome, t.message[:200]) for t in report.tests if not t.passed and t.max_score > 0]


def test_reference_gets_full_marks(graded):
    a, reports = graded
    report = reports["reference"]
    assert _failures(report) == []
    assert report.score == report.max_score == a.total_points


def test_template_gets_zero_with_a_message_per_test(graded):
    _, reports = graded
    report = reports["template"]
    earning = [(t.test_id, t.score) for t in report.tests if t.score > 0]
    assert earning == []
    graded_tests = [t for t in report.tests if t.max_score > 0]  # 0-point checks may pass on given code
    assert all(t.message for t in graded_tests), [t.test_id for t in graded_tests if not t.message]
    assert not any("Traceback" in t.message for t in report.tests)


def test_every_mutant_loses_points(graded):
    a, reports = graded
    mutants = {k: r for k, r in reports.items() if k.startswith("mutant:")}
    assert len(mutants) >= MIN_MUTANTS.get(a.id, 12)
    survivors = [k for k, r in mutants.items() if r.score >= r.max_score or r.max_score != a.total_points]
    assert survivors == []


def test_no_mutant_could_keep_full_marks_by_rewriting_its_test_process(graded):
    """Every point is decided by the parent: a mutant that flipped every reported outcome to
    "passed" would still lose points. (Each mutant ran until its first test whose evidence
    failed, so one run proves both.)"""
    _, reports = graded
    flipped = [k for k, r in reports.items() if k.startswith("mutant:") and r.evidence_score >= r.max_score]
    assert flipped == []


@pytest.mark.parametrize("subject", ["template", "starter:return", "starter:pass"])
def test_no_code_earns_nothing_even_by_rewriting_the_test_process(graded, subject):
    """The template and the real starters' placeholders (`return ...`, `pass`) score 0, and so
    would a version of them that reported every test as passed."""
    _, reports = graded
    report = reports[subject]
    assert (report.score, report.evidence_score) == (0, 0), [
        (t.test_id, t.score, t.evidence_score) for t in report.tests if t.score or t.evidence_score
    ]
    graded_tests = [t for t in report.tests if t.max_score > 0]
    assert all(t.message and "Traceback" not in t.message for t in graded_tests)


def test_every_correct_alternative_gets_full_marks(graded):
    a, reports = graded
    for name, report in ((k, r) for k, r in reports.items() if k.startswith("alternative:")):
        lost = [(t.test_id, t.message[:200]) for t in report.tests if t.max_score > 0 and not t.passed]
        assert lost == [], name
        assert report.score == report.evidence_score == report.max_score == a.total_points, name


@pytest.mark.parametrize("assignment_id", ASSIGNMENTS)
def test_every_point_is_decided_by_the_parent(assignment_id):
    a = load_assignment(assignment_id)
    assert parent_decided_points(a) == a.total_points


@pytest.mark.parametrize("assignment_id", ASSIGNMENTS)
def test_mutants_and_variants_apply_to_the_reference(assignment_id):
    """Every edit's old text occurs once in today's reference (cheap: no grading)."""
    a = load_assignment(assignment_id)
    mutants = list_mutants(a)
    assert len(mutants) >= MIN_MUTANTS.get(a.id, 12), f"{a.mutants_file}: too few mutants"
    check(a, mutants)
    check(a, list(load_variants(a).values()))


@pytest.mark.parametrize("assignment_id", ASSIGNMENTS)
def test_template_is_in_sync_with_the_reference(assignment_id):
    assert check_template(load_assignment(assignment_id)) == []


@pytest.mark.parametrize("assignment_id", ASSIGNMENTS)
def test_rubric_lists_every_collected_test(assignment_id):
    """Collected the way check-suite collects (one function, grader.checksuite.collected_tests)."""
    a = load_assignment(assignment_id)
    ids, error = collected_tests(a)
    collected = {test_id.split("[")[0] for test_id in ids}
    listed = {t.test_id for t in a.tests}
    assert collected and not error, error
    assert collected - listed == set(), "tests missing from assignment.yaml"
    assert listed - collected == set(), "assignment.yaml lists tests that do not exist"
    assert abs(sum(q.points for q in a.questions) - a.total_points) < 1e-9


@pytest.mark.parametrize("assignment_id", ASSIGNMENTS)
def test_snapshot_manifest_matches_the_files(assignment_id):
    a = load_assignment(assignment_id)
    manifest = json.loads((a.snapshots_dir / "manifest.json").read_text())
    on_disk = {
        p.relative_to(a.snapshots_dir).as_posix()
        for p in a.snapshots_dir.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    assert set(manifest["files"]) == on_disk
    for rel, digest in manifest["files"].items():
        assert _sha256(a.snapshots_dir / rel) == digest, rel
    assert not list(a.snapshots_dir.rglob("*.pt")) and not list(a.snapshots_dir.rglob("*.pkl"))
