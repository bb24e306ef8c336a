"""The engine on the toy assignment: grading, variants, rules, crashes, messages, results.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from grader.mutants import grade_mutants, load_variants, materialise
from grader.oracle import OracleServer
from grader.report import score
from grader.results import build_results, schema, validate
from grader.runner import grade


def _submission(
    toy, tmp_path: Path, name: str, replace: dict[str, str] | None = None, source: str = "reference"
) -> Path:
    """A submission folder: the reference (or template) with some functions' bodies replaced."""
    folder = tmp_path / name
    shutil.copytree(
        toy.reference_dir if source == "reference" else toy.template_dir,
        folder,
        ignore=shutil.ignore_patterns("variants.yaml"),
    )
    text = (folder / "ops.py").read_text()
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    (folder / "ops.py").write_text(text)
    return folder


def _by_name(report):
    return {t.test_id: t for t in report.tests}


@pytest.fixture(scope="module")
def reference_report(toy):
    return grade(toy, toy.reference_dir)


def test_reference_gets_full_marks(toy, reference_report):
    failing = [(t.test_id, t.message) for t in reference_report.tests if not t.passed and t.max_score > 0]
    assert failing == []
    assert reference_report.score == reference_report.max_score == toy.total_points == 13


def test_skipped_test_is_reported_not_dropped(reference_report):
    t = _by_name(reference_report)["hidden/test_gradescope.py::test_skipped"]
    assert t.outcome == "skipped" and "skipped on purpose" in t.message


def test_template_gets_zero_with_one_message_per_test(toy):
    report = grade(toy, toy.template_dir)
    assert report.score == 0
    for t in report.tests:
        assert t.outcome in ("failed", "error"), t
        assert t.message and "Traceback" not in t.message and "grader/" not in t.message
    assert "not implemented yet" in _by_name(report)["hidden/test_ops.py::test_norm"].message


def test_every_mutant_loses_points_with_the_right_test(toy):
    results = {r.name: r for r in grade_mutants(toy, jobs=2)}
    assert set(results) == {"no_scale", "uses_layer_norm", "alias_layer_norm", "loop_rows", "wrong_layout"}
    assert all(r.killed for r in results.values())
    expect_failing = {
        "no_scale": "hidden/test_ops.py::test_scaled[0.5]",
        "uses_layer_norm": "hidden/test_ops.py::test_norm",
        "alias_layer_norm": "hidden/test_ops.py::test_norm",
        "loop_rows": "hidden/test_ops.py::test_rowsum_vectorised",
        "wrong_layout": "hidden/test_ops.py::test_layout",
    }
    for name, test_id in expect_failing.items():
        t = _by_name(results[name].report)[test_id]
        assert not t.passed, (name, test_id)
    for name in ("uses_layer_norm", "alias_layer_norm"):
        msg = _by_name(results[name].report)["hidden/test_ops.py::test_norm"].message
        assert "The handout disables layer_norm" in msg and "layer_norm" in msg
    assert "grows with" in _by_name(results["loop_rows"].report)["hidden/test_ops.py::test_rowsum_vectorised"].message


def test_accepted_variant_gets_full_marks(toy, tmp_path):
    folder = materialise(load_variants(toy)["alt"], toy.reference_dir, tmp_path / "alt", toy)
    shutil.copy(toy.reference_dir / "helper.py", folder)
    report = grade(toy, folder)
    assert report.score == report.max_score, [(t.test_id, t.message) for t in report.tests if not t.passed]


def test_results_json_is_valid_and_complete(toy, reference_report, tmp_path):
    results = build_results(reference_report)
    validate(results)
    jsonschema.Draft202012Validator.check_schema(schema())
    assert isinstance(results["execution_time"], float)
    ids = {t["extra_data"]["test_id"].split("[")[0] for t in results["tests"]}
    assert ids == {spec.test_id for spec in toy.tests}
    vis = {t["extra_data"]["test_id"]: t["visibility"] for t in results["tests"]}
    assert vis["public/test_ops.py::test_scaled_shape"] == "visible"
    assert vis["hidden/test_ops.py::test_norm"] == "after_due_date"
    path = tmp_path / "results.json"
    grade(toy, toy.reference_dir, results_path=path)
    validate(json.loads(path.read_text()))


def test_hidden_messages_never_contain_expected_values(toy, tmp_path):
    folder = _submission(toy, tmp_path, "wrong_sum", {"float(x.sum())": "float(x.sum()) + 0.25"})
    report = grade(toy, folder)
    msg = _by_name(report)["hidden/test_ops.py::test_stats"].message
    assert "differs from the expected value" in msg
    assert "15.0" not in msg and "15.25" in msg  # arange(6).sum() == 15: ours shown, theirs not
    folder = _submission(toy, tmp_path, "wrong_scale", {"return x * s + OFFSET": "return x * s * 1.01 + OFFSET"})
    report = grade(toy, folder)
    public = _by_name(report)["public/test_ops.py::test_scaled_shape"].message
    hidden = _by_name(report)["hidden/test_ops.py::test_scaled[3.0]"].message
    assert "expected" in public and "got" in public  # public tests may show both values
    assert "values differ at" in hidden and "got" not in hidden


def test_hide_errors_and_partial_credit(toy, tmp_path):
    folder = _submission(toy, tmp_path, "bad_stats", {'"ok"]': '"no"]'})
    report = grade(toy, folder)
    t = _by_name(report)["hidden/test_gradescope.py::test_hidden_errors"]
    results = build_results(report)
    entry = next(e for e in results["tests"] if e["extra_data"]["test_id"] == t.test_id)
    assert entry["output"].endswith("Something about stats is wrong.") and "stats" in entry["tags"]
    folder = _submission(toy, tmp_path, "half", {"return x * s + OFFSET": "return x * s + OFFSET + (x == 1) * 0.5"})
    t = _by_name(grade(toy, folder))["hidden/test_gradescope.py::test_partial"]
    assert t.outcome == "passed" and t.score == 0.5 and t.max_score == 2


def test_set_score_cannot_exceed_the_rubric(toy):
    ev = {
        "hidden/test_gradescope.py::test_partial": {
            "test": "hidden/test_gradescope.py::test_partial",
            "outcome": "passed",
            "score": 99.0,
        }
    }
    trusted = OracleServer(None, token="t")  # a run whose test process compared itself
    report = score(toy, ev, [], 0.0, "x", oracle=trusted)
    assert _by_name(report)["hidden/test_gradescope.py::test_partial"].score == 2.0


@pytest.mark.parametrize(
    ("name", "replace", "test_id", "outcome", "words"),
    [
        (
            "exit_in_test",
            {"return [x.shape[0]": "import os; os._exit(0)\n    return [x.shape[0]"},
            "hidden/test_ops.py::test_stats",
            "crashed",
            "died",
        ),
        (
            "segfault",
            {"return x.sum(-1)": "import ctypes; ctypes.string_at(0)\n    return x.sum(-1)"},
            "hidden/test_ops.py::test_rowsum_vectorised",
            "crashed",
            "SIGSEGV",
        ),
        (
            "infinite_loop",
            {'return {"kind": "a", "y": x}': "while True:\n        pass"},
            "hidden/test_ops.py::test_layout",
            "failed",
            "Timeout",
        ),
        (
            "sys_exit",
            {'return {"kind": "a", "y": x}': "raise SystemExit(0)"},
            "hidden/test_ops.py::test_layout",
            "failed",
            "SystemExit",
        ),
    ],
)
def test_a_crash_costs_only_its_own_tests(toy, tmp_path, name, replace, test_id, outcome, words):
    report = grade(toy, _submission(toy, tmp_path, name, replace))
    by = _by_name(report)
    assert by[test_id].outcome == outcome and words in by[test_id].message, by[test_id]
    assert by["hidden/test_ops.py::test_norm"].passed
    assert by["public/test_ops.py::test_scaled_shape"].passed


@pytest.mark.parametrize(
    ("name", "change", "words"),
    [
        ("missing_file", lambda f: (f / "ops.py").unlink(), "the submission has no ops.py or ops_solution.py"),
        (
            "syntax_error",
            lambda f: (f / "ops.py").write_text("def scaled(x, s)\n    return x\n"),
            "SyntaxError at line 1",
        ),
        ("missing_function", lambda f: (f / "ops.py").write_text("import torch\n"), "ops.py does not define `scaled`"),
        (
            "course_import",
            lambda f: (f / "ops.py").write_text("import notapackage_xyz\n"),
            "imports `notapackage_xyz`, which this course's grading environment does not provide",
        ),
    ],
)
def test_broken_submissions_fail_cleanly(toy, tmp_path, name, change, words):
    folder = _submission(toy, tmp_path, name)
    change(folder)
    report = grade(toy, folder)
    t = _by_name(report)["public/test_ops.py::test_scaled_shape"]
    assert words in t.message and report.score == 0
    validate(build_results(report))


def test_alternative_file_name_is_accepted_and_noted(toy, tmp_path):
    folder = _submission(toy, tmp_path, "renamed")
    (folder / "ops.py").rename(folder / "ops_solution.py")
    # the file imports itself under its own name nowhere, so the rename is harmless
    report = grade(toy, folder)
    assert report.score == report.max_score
    assert any("ops_solution.py" in n for n in report.notes)


def test_files_nested_in_a_folder_are_found(toy, tmp_path):
    folder = tmp_path / "nested"
    shutil.copytree(toy.reference_dir, folder / "src", ignore=shutil.ignore_patterns("variants.yaml"))
    report = grade(toy, folder)
    assert report.score == report.max_score
    assert any("found ops.py in src/" in n for n in report.notes)


def test_import_time_randomness_does_not_shift_inputs(toy, tmp_path):
    folder = _submission(toy, tmp_path, "noisy_import", {"import torch\n": "import torch\n_ = torch.randn(100)\n"})
    assert grade(toy, folder).score == toy.total_points


def test_grading_is_deterministic(toy, tmp_path):
    folder = _submission(toy, tmp_path, "det", {"return x * s + OFFSET": "return x * s * 1.5 + OFFSET"})
    runs = [[(t.test_id, t.outcome, t.score, t.message) for t in grade(toy, folder).tests] for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


def test_student_prints_are_shown_with_the_test(toy, tmp_path):
    folder = _submission(
        toy, tmp_path, "printer", {"    return x.sum(-1)": "    print('debug: rowsum called')\n    return x.sum(-1)"}
    )
    report = grade(toy, folder)
    assert "debug: rowsum called" in _by_name(report)["hidden/test_ops.py::test_rowsum_vectorised"].stdout


def test_a_placeholder_in_a_returned_tuple_reads_as_not_implemented():
    """CMU's starter returns `q, kT, v` with each still `...`: a value check says "not implemented
    yet", not that a tuple of ellipses cannot be checked."""
    from grader.plugin import _not_implemented

    for value in (..., (..., ..., ...), [1, ...]):
        assert _not_implemented(value).startswith("not implemented yet"), value
    for value in ((1, 2), None, "...", [None]):
        assert _not_implemented(value) is None, value
