"""Synthetic real-style submissions (tests/real_style/): each otherwise correct, each at full marks.

Each case reproduces one habit of real students' code that once cost points through no fault of
the student (issue #11): a package layout, an unconditional wandb.log, .cuda() calls, NLTK data
built at import, pandas-2 `.values`, transformers-4 `TrainingArguments`, a notebook global. The
submission is the reference changed as the case's CASE.yaml says (tests/real_style/README.md),
graded through the same path Gradescope uses.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

from grader.assignment import load_assignment
from grader.notebook import py_to_notebook
from grader.runner import grade

CASES = Path(__file__).parents[1] / "real_style"
# What the grader says about each case, besides the full marks.
NOTES = {
    "cmu_11667_a2/package_layout": "kept the package `lm` and imported them as lm.model",
    "mila_ift6135_a2/cuda_mask": "your code asked for CUDA",
    "duke_ece661_hw3/hparams_global": "object hparams (a HyperParams) (cell",
}


def _spec(folder: Path) -> dict:
    path = folder / "CASE.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {} if path.is_file() else {}


def _cases():
    for readme in sorted(CASES.glob("*/*/README.md")):
        folder = readme.parent
        reason = _spec(folder).get("xfail")
        marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
        yield pytest.param(f"{folder.parent.name}/{folder.name}", marks=marks, id=f"{folder.parent.name}/{folder.name}")


def build_submission(case: Path, assignment, dest: Path) -> Path:
    """The reference's module files, moved, edited and converted as CASE.yaml says, with the
    case's own files over them."""
    spec = _spec(case)
    moves = spec.get("move") or {}
    names = [n for names in assignment.modules.values() for n in names] + list(moves)
    for name in dict.fromkeys(names):
        source = assignment.reference_dir / name
        if source.is_file():
            target = dest / moves.get(name, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    for path in case.rglob("*"):
        rel = path.relative_to(case)
        if path.is_file() and rel.as_posix() not in ("README.md", "CASE.yaml"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / rel)
    for file, edits in (spec.get("edit") or {}).items():
        text = (dest / file).read_text(encoding="utf-8")
        for old, new in edits:
            assert text.count(old) == 1, f"{case.name}: {file} should contain once: {old!r}"
            text = text.replace(old, new)
        (dest / file).write_text(text, encoding="utf-8")
    for file in spec.get("notebook") or []:
        source = dest / file
        nbformat.write(py_to_notebook(source.read_text(encoding="utf-8")), str(source.with_suffix(".ipynb")))
        source.unlink()
    return dest


@pytest.mark.parametrize("case", list(_cases()))
def test_real_style_submission_gets_full_marks(case, shared_tmp):
    assignment_id, name = case.split("/")
    assignment = load_assignment(assignment_id)
    folder = build_submission(CASES / case, assignment, shared_tmp / f"real-{assignment_id}-{name}")
    report = grade(assignment, folder)
    lost = [(t.test_id, t.outcome, t.message[:300]) for t in report.tests if not t.passed and t.max_score > 0]
    assert report.score == report.max_score == assignment.total_points, (lost, report.notes[:6])
    if case in NOTES:
        assert any(NOTES[case] in note for note in report.notes), report.notes


def test_every_case_has_a_one_line_readme():
    for readme in CASES.glob("*/*/README.md"):
        lines = [ln for ln in readme.read_text(encoding="utf-8").splitlines() if ln.strip()]
        assert len(lines) == 1, readme
        assert (CASES.parent.parent / "test_suites" / readme.parent.parent.name).is_dir(), readme
