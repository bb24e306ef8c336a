"""A student's loop, end to end, for every assignment (issue #14): unpack the handout, fill in one
function as a student would (in the notebook for the notebook course), see its public test pass
through bare ``pytest`` and through ``lmgrade.check`` (run in a real Jupyter kernel for the
notebook, headless with nbclient), ``export``, and grade the exported zip with the autograder's
``run_autograder``: the test passes there too, and the score is the one ``lmgrade grade`` gives
the same zip.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from grader.assignment import load_assignment
from grader.build import stage_autograder, stage_handout
from grader.envs import cache_dir
from grader.results import validate
from grader.runner import grade

# assignment -> (file, function a student fills in, its public test, its question)
FILLS = {
    "cmu_11667_a2": ("train.py", "cosine_lr_schedule", "public/test_train.py::test_cosine_lr_schedule", "2.1"),
    "mila_ift6135_a2": (
        "gpt1_solution.py",
        "LayerNorm.forward",
        "public/test_gpt1_public.py::test_layernorm_forward_shape",
        "2.1",
    ),
    "cmu_10423_hw3": (
        "dataloader.py",
        "CustomDataLoader._add_instruction_finetuning",
        "public/test_data_public.py::test_instruction_text_has_review_and_label",
        "dataloader.py",
    ),
    "duke_ece661_hw3": ("LabRNN.ipynb", "tokenize", "public/test_rnn_public.py::test_tokenize_returns_ids", "2(c)"),
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "LMGRADE_", "PYTHONPATH"))}
    env.update(LMGRADE_ENV_CACHE=str(cache_dir()), OMP_NUM_THREADS="1", **extra)
    return env


def _function_lines(source: str, qualname: str) -> tuple[int, int]:
    """(first, last) 1-based lines of ``qualname`` in ``source``, decorators included."""
    scope = ast.parse(source).body
    node = None
    for part in qualname.split("."):
        node = next(n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part)
        scope = node.body
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return first, node.end_lineno


def _splice(target: str, qualname: str, reference: str) -> str:
    """``target`` with ``qualname``'s definition replaced by the reference's (what the student writes)."""
    first, last = _function_lines(reference, qualname)
    written = reference.splitlines(keepends=True)[first - 1 : last]
    t_first, t_last = _function_lines(target, qualname)
    lines = target.splitlines(keepends=True)
    return "".join(lines[: t_first - 1] + written + lines[t_last:])


def _fill(assignment, handout: Path, file: str, qualname: str) -> None:
    reference = (assignment.reference_dir / file.replace(".ipynb", ".py")).read_text(encoding="utf-8")
    if not file.endswith(".ipynb"):
        path = handout / file
        path.write_text(_splice(path.read_text(encoding="utf-8"), qualname, reference), encoding="utf-8")
        return
    path = handout / file  # the notebook: edit the cell that defines the function, as in Jupyter
    nb = nbformat.read(str(path), as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and f"def {qualname.split('.')[-1]}(" in c.source)
    cell.source = _splice(cell.source, qualname, reference)
    nbformat.write(nb, str(path))


def _in_notebook_check(handout: Path, notebook: str, question: str) -> str:
    """Run the notebook in a real kernel, then `lmgrade.check(question)` in a cell: its text."""
    from nbclient import NotebookClient

    nb = nbformat.read(str(handout / notebook), as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code" and not c.source.lstrip().startswith(("!", "%"))]
    nb.cells.append(nbformat.v4.new_code_cell(f"import lmgrade\nprint(repr(lmgrade.check({question!r})))"))
    NotebookClient(
        nb, timeout=600, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(handout)}}
    ).execute()
    return "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")


def _run_autograder(assignment, submission_zip: Path, base: Path) -> dict:
    root = base / "autograder"
    stage_autograder(assignment, root / "source")
    for part in ("submission", "results"):
        (root / part).mkdir()
    with zipfile.ZipFile(submission_zip) as zf:
        zf.extractall(root / "submission")
    for path in [base, *base.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    proc = subprocess.run(
        [str(root / "source" / "run_autograder")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
        env=_env(LMGRADE_AUTOGRADER_ROOT=str(root), LMGRADE_PYTHON=sys.executable),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    validate(results)
    return results


@pytest.mark.parametrize("assignment_id", sorted(FILLS))
def test_a_student_fills_one_function_checks_exports_and_is_graded(assignment_id, shared_tmp, tmp_path):
    a = load_assignment(assignment_id)
    file, qualname, test_id, question = FILLS[assignment_id]
    base = shared_tmp / f"flow-{assignment_id}-{tmp_path.name}"
    handout = base / "handout"
    stage_handout(a, handout)
    if a.notebooks:
        assert not [n for n in a.notebooks.values() if (handout / n).exists()], "a notebook course gets no .py twins"
    _fill(a, handout, file, qualname)

    _, test_name = test_id.split("::")
    bare = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", test_name],
        cwd=handout,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
        check=False,
    )
    assert f"{test_name} PASSED" in bare.stdout or " passed" in bare.stdout.splitlines()[-1], bare.stdout[-3000:]
    assert "failed" not in bare.stdout.splitlines()[-1], bare.stdout[-3000:]

    if file.endswith(".ipynb"):
        shown = _in_notebook_check(handout, file, question)
    else:
        shown = subprocess.run(
            [sys.executable, "-m", "lmgrade", "check", question],
            cwd=handout,
            capture_output=True,
            text=True,
            timeout=600,
            env=_env(),
            check=False,
        ).stdout
    assert "PASS" in shown and test_id in shown, shown
    assert f"question {question}" in shown, shown

    exported = subprocess.run(
        [sys.executable, "-m", "lmgrade", "export"],
        cwd=handout,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )
    assert exported.returncode == 0, exported.stdout + exported.stderr
    submission_zip = handout / "submission.zip"
    with zipfile.ZipFile(submission_zip) as zf:
        names = sorted(zf.namelist())
    assert file in names and not [n for n in names if n.startswith(("grader/", "test_suites/", "fixtures/"))]

    results = _run_autograder(a, submission_zip, base / "gradescope")
    by_id = {t["extra_data"]["test_id"]: t for t in results["tests"]}
    assert by_id[test_id]["status"] == "passed", by_id[test_id]
    direct = grade(a, _unzipped(submission_zip, base / "direct"))
    assert results["score"] == direct.score
    shutil.rmtree(base, ignore_errors=True)


def _unzipped(archive: Path, dest: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest)
    dest.chmod(0o755)
    return dest
