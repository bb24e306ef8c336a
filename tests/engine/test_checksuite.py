"""`lmgrade check-suite` finds each authoring mistake in a scratch copy of the toy assignment,
with a one-line message, and `build-autograder` refuses to build on it (issue #16)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from grader.assignment import load_assignment
from grader.build import BuildError, build_autograder
from grader.checksuite import check_suite
from grader.runner import grade

OPS = "hidden/test_ops.py"


@pytest.fixture
def scratch(toy_root, shared_tmp, tmp_path):
    root = Path(shutil.copytree(toy_root, shared_tmp / f"scratch-{tmp_path.name}"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _problems(root: Path, **kwargs) -> list[str]:
    return check_suite(load_assignment("toy", root=root), **kwargs)


def test_the_toy_suite_is_consistent(scratch):
    assert _problems(scratch) == []


def test_a_clean_recording_is_reused_only_for_the_same_inputs(scratch, tmp_path, monkeypatch):
    """The recording is kept on disk by the content of its inputs: the same bytes under another
    root reuse it; one byte changed in the suite records again; a result with problems is not kept."""
    from grader import checksuite

    monkeypatch.setenv("LMGRADE_ENV_CACHE", str(tmp_path / "envs"))  # its sibling check-suite/ is the cache
    monkeypatch.setattr(checksuite, "_MEMO", {})
    recorded = []
    real = checksuite._record_and_compare
    monkeypatch.setattr(checksuite, "_record_and_compare", lambda a, s: recorded.append(a.root) or real(a, s))
    assert _problems(scratch) == [] and recorded == [scratch]
    assert len(list((tmp_path / "check-suite").glob("record-*.json"))) == 1
    copy = Path(shutil.copytree(scratch, scratch.parent / f"{scratch.name}-copy"))
    try:
        monkeypatch.setattr(checksuite, "_MEMO", {})  # a new process
        assert _problems(copy) == [] and recorded == [scratch]  # same content: not recorded again
        suite = copy / "test_suites" / "toy" / "hidden" / "test_ops.py"
        _edit(suite, 'hint="did you use the biased variance?"', "rtol=1e-2")
        assert _problems(copy) != [] and recorded == [scratch, copy]
        assert len(list((tmp_path / "check-suite").glob("record-*.json"))) == 1  # problems are not kept
        monkeypatch.setenv("LMGRADE_CHECK_CACHE", "0")  # `check-suite --fresh`
        assert checksuite._cache_file(checksuite._inputs_fingerprint(load_assignment("toy", root=scratch))) is None
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def test_a_test_missing_from_the_rubric(scratch):
    suite = scratch / "test_suites" / "toy" / "hidden" / "test_ops.py"
    suite.write_text(
        suite.read_text()
        + "\n\ndef test_extra(sub, snapshot):\n    snapshot.check('y', sub.ops.rowsum(__import__('torch').ones(2, 2)))\n"  # noqa: E501
    )
    problems = _problems(scratch, record=False)
    assert problems == [
        f"{OPS}::test_extra is collected but no question lists it (add it to assignment.yaml, "
        "with 0 points if it earns none)"
    ]


def test_a_rubric_line_naming_no_test(scratch):
    _edit(
        scratch / "test_suites" / "toy" / "assignment.yaml",
        f"      {OPS}::test_stats: 2\n",
        f"      {OPS}::test_stats: 2\n      {OPS}::test_gone: 0\n",
    )
    assert _problems(scratch, record=False) == [f"question 1 lists {OPS}::test_gone, which the suite does not define"]


def test_a_key_never_recorded_and_a_stale_tolerance_hint_and_mask(scratch):
    suite = scratch / "test_suites" / "toy" / "hidden" / "test_ops.py"
    _edit(
        suite,
        'snapshot.check("stats", sub.ops.stats(x))',
        'snapshot.check("stats", sub.ops.stats(x))\n    snapshot.check("stats_again", sub.ops.stats(x + 1))',
    )
    _edit(suite, 'hint="did you use the biased variance?"', 'hint="biased variance, please", rtol=1e-2')
    _edit(suite, 'snapshot.check("y", out["y"])', 'snapshot.check("y", out["y"], mask=x > 0)')
    problems = _problems(scratch)
    fix = "run `lmgrade record toy`"
    assert f"{OPS}::test_stats: the suite sends `stats_again`, which was never recorded: {fix}" in problems
    assert any(
        p.startswith(f"{OPS}::test_norm: `y`: the test code says rtol 0.01, the snapshot holds 0.0001")
        for p in problems
    ), problems
    assert any(
        p.startswith(f"{OPS}::test_norm: `y`: the test code says hint 'biased variance, please'") for p in problems
    ), problems
    assert f"{OPS}::test_layout: `y`: the test code's mask differs from the recorded one: {fix}" in problems
    assert len(problems) == 4, problems


def test_a_key_recorded_but_no_longer_sent(scratch):
    _edit(scratch / "test_suites" / "toy" / "hidden" / "test_ops.py", '    snapshot.check("kind", out["kind"])\n', "")
    assert _problems(scratch) == [
        f"{OPS}::test_layout: `kind` is recorded but the suite no longer sends it: run `lmgrade record toy`"
    ]


def test_a_misspelt_forbidden_name(scratch):
    _edit(
        scratch / "test_suites" / "toy" / "assignment.yaml",
        'forbid: ["@layer_norm"]',
        'forbid: ["@layer_norm", "torch.nn.functional.sofmax"]',
    )
    assert _problems(scratch, record=False) == [
        "rule no-layer-norm forbids torch.nn.functional.sofmax, which does not exist, so it enforces nothing "
        "(did you mean torch.nn.functional.softmax?)"
    ]


def test_a_graded_test_without_evidence(scratch):
    suite = scratch / "test_suites" / "toy" / "hidden" / "test_ops.py"
    _edit(
        suite,
        'def test_stats(sub, snapshot):\n    x = torch.arange(6.0).reshape(3, 2)\n    snapshot.check("stats", sub.ops.stats(x))',  # noqa: E501
        'def test_stats(sub, snapshot):\n    x = torch.arange(6.0).reshape(3, 2)\n    assert sub.ops.stats(x)[2] == "ok"',  # noqa: E501
    )
    problems = _problems(scratch)
    assert (
        f"{OPS}::test_stats (2 points) sends no value the grader can check, so it earns nothing: add "
        "snapshot.check or snapshot.judge (docs/engine.md)" in problems
    )


def test_a_stale_template_and_too_few_mutants(scratch):
    _edit(
        scratch / "reference" / "toy" / "ops.py", '"""Return x * s + OFFSET."""', '"""Return x times s, plus OFFSET."""'
    )
    _edit(scratch / "test_suites" / "toy" / "assignment.yaml", "min_mutants: 5", "min_mutants: 12")
    problems = _problems(scratch, record=False)
    assert any(p.startswith("template: ") and p.endswith("(run `lmgrade template toy`)") for p in problems), problems
    assert any(re.match(r"\d+ mutants \(the minimum is 12\)", p) for p in problems), problems


def test_dtype_is_compared_exactly(scratch):
    """A float64 result where the reference gave float32 used to pass."""
    folder = scratch / "float64"
    shutil.copytree(scratch / "reference" / "toy", folder, ignore=shutil.ignore_patterns("variants"))
    _edit(folder / "ops.py", "return x * s + OFFSET", "return (x * s + OFFSET).double()")
    report = grade(load_assignment("toy", root=scratch), folder)
    t = next(t for t in report.tests if t.test_id == f"{OPS}::test_scaled[0.5]")
    assert not t.passed and "dtype float64, expected float32" in t.message


def test_build_autograder_refuses_a_suite_with_a_mistake(scratch, tmp_path):
    _edit(
        scratch / "test_suites" / "toy" / "assignment.yaml",
        f"      {OPS}::test_stats: 2\n",
        f"      {OPS}::test_stats: 2\n      {OPS}::test_gone: 0\n",
    )
    with pytest.raises(BuildError, match=f"question 1 lists {OPS}::test_gone, which the suite does not define"):
        build_autograder(load_assignment("toy", root=scratch), tmp_path / "autograder.zip", stale_template_ok=True)
    assert not (tmp_path / "autograder.zip").exists()
