"""Staging real layouts: packages kept, flat layouts unchanged, nothing escapes stage(), and
failure messages that name the student's file (or notebook cell), line and Class.method."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import nbformat
import pytest

from grader import project_root
from grader.assignment import load_assignment
from grader.submission import (
    StagedSubmission,
    describe_exception,
    exception_text,
    stage,
    student_location,
)

DEEP = 200_000


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


OPS = """\
    import torch
    from {imp} import OFFSET2


    def scaled(x, s):
        return x * s + OFFSET2
    """


# -- packages ------------------------------------------------------------------------------------


def test_package_imported_by_name_is_kept(toy, tmp_path):
    src = write(
        tmp_path / "sub",
        {
            "src/lm/__init__.py": "",
            "src/lm/ops.py": OPS.format(imp="lm.consts"),
            "src/lm/consts.py": "OFFSET2 = 1.0\n",
            "src/lm/sub/deeper.py": "X = 1\n",
            "src/lm/conftest.py": "raise SystemExit\n",
            "src/lm/torch.py": "raise SystemExit\n",
            "src/lm/notes.txt": "not code\n",
        },
    )
    (src / "src/lm/link.py").symlink_to(src / "src/lm/consts.py")
    staged = stage(toy, src, tmp_path / "staged")
    assert staged.found["ops"] == "lm/ops.py" and "ops" not in staged.errors
    files = sorted(p.relative_to(staged.path / "lm").as_posix() for p in (staged.path / "lm").rglob("*") if p.is_file())
    assert files == ["__init__.py", "consts.py", "ops.py", "sub/deeper.py"]
    assert not (staged.path / "ops.py").exists()  # one copy: no second module object
    assert "found ops.py in src/lm/: kept the package `lm` and imported it as lm.ops" in staged.notes
    reloaded = StagedSubmission.load(staged.path)
    assert reloaded.found["ops"] == "lm/ops.py" and reloaded.packages == {"ops.py": "lm/ops.py"}


def test_package_module_is_one_object_with_the_students_import(toy, tmp_path):
    src = write(
        tmp_path / "sub",
        {
            "hw2/src/lm/__init__.py": "",
            "hw2/src/lm/ops.py": textwrap.dedent(OPS.format(imp="lm.consts")) + "\nclass Box:\n    pass\n",
            "hw2/src/lm/consts.py": "OFFSET2 = 1.0\n",
            "hw2/src/lm/user.py": "from lm.ops import Box\n",
        },
    )
    staged = stage(toy, src, tmp_path / "staged")
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(staged.path)!r})
        from grader.submission import Modules, StagedSubmission
        mods = Modules(StagedSubmission.load(__import__("pathlib").Path({str(staged.path)!r})), None)
        box = mods.ops.Box
        import lm.user
        print(json.dumps({{"same": box is lm.user.Box, "name": mods.ops._module.__name__,
                          "flat": "ops" in sys.modules}}))
        """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(project_root())},
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == {"same": True, "name": "lm.ops", "flat": False}


def test_relative_imports_keep_the_folder_as_a_package(toy, tmp_path):
    src = write(
        tmp_path / "sub", {"code/mypkg/ops.py": OPS.format(imp=".consts"), "code/mypkg/consts.py": "OFFSET2 = 1.0\n"}
    )
    staged = stage(toy, src, tmp_path / "staged")
    assert staged.found["ops"] == "mypkg/ops.py"


def test_flat_layout_in_a_folder_is_still_flattened(toy, tmp_path):
    """The F23 layout: src/ has an __init__.py, but the files import each other flat."""
    src = write(
        tmp_path / "sub",
        {
            "src/__init__.py": "",
            "src/ops.py": OPS.format(imp="helper"),
            "src/helper.py": "OFFSET = 1.0\nOFFSET2 = 1.0\n",
        },
    )
    staged = stage(toy, src, tmp_path / "staged")
    assert staged.found["ops"] == "ops.py" and staged.packages == {}
    assert "found ops.py in src/ and used it" in staged.notes


@pytest.mark.parametrize("folder", ["torch", "json", "wandb", "my-code"])
def test_reserved_or_invalid_package_names_are_flattened(toy, tmp_path, folder):
    src = write(
        tmp_path / "sub",
        {f"{folder}/ops.py": OPS.format(imp=f"{folder}.consts"), f"{folder}/consts.py": "OFFSET2 = 1.0\n"},
    )
    staged = stage(toy, src, tmp_path / "staged")
    assert staged.found["ops"] == "ops.py" and staged.packages == {}


def test_package_layout_grades_like_the_flat_one(toy, tmp_path):
    from grader.runner import grade

    reference = (toy.reference_dir / "ops.py").read_text().replace("from helper import", "from toylib.helper import")
    src = write(
        tmp_path / "sub",
        {"src/toylib/__init__.py": "", "src/toylib/ops.py": reference, "src/toylib/helper.py": "OFFSET = 1.0\n"},
    )
    report = grade(toy, src)
    assert report.score == report.max_score, [(t.test_id, t.message) for t in report.tests if not t.passed]


# -- nothing escapes stage() ------------------------------------------------------------------------


def _notebook(path: Path, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, str(path))


@pytest.mark.parametrize(
    "deep",
    [
        "x = " + "-" * DEEP + "1\n",
        "x = " + "(" * DEEP + "1" + ")" * DEEP,
        "x = " + "1+" * DEEP + "1\n",
        "x = a" + ".b" * DEEP + "\n",
    ],
)
def test_deeply_nested_cell_is_skipped_and_reported(tmp_path, deep):
    assignment = load_assignment("duke_ece661_hw3")
    sub = tmp_path / "sub"
    sub.mkdir()
    _notebook(sub / "LabRNN.ipynb", ["def tokenize(vocab, text):\n    return [1]\n", deep])
    _notebook(sub / "LabLLM.ipynb", ["y = 1\n"])
    staged = stage(assignment, sub, tmp_path / "staged")
    assert staged.found["rnn"] == "LabRNN.py"
    assert "def tokenize" in (staged.path / "LabRNN.py").read_text()
    report = next(n for n in staged.notes if n.startswith("LabRNN.ipynb"))
    assert "cell 2:" in report and ("nested too deeply" in report or "SyntaxError" in report)


def test_deeply_nested_python_file_does_not_stop_staging(toy, tmp_path):
    src = write(tmp_path / "sub", {"src/lm/ops.py": "x = " + "-" * DEEP + "1\n"})
    staged = stage(toy, src, tmp_path / "staged")
    assert staged.found["ops"] == "ops.py"  # no package evidence could be read: flattened


def test_an_unexpected_error_becomes_a_note(toy, tmp_path, monkeypatch):
    import grader.notebook
    import grader.submission

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(grader.submission, "hook_files", broken)
    staged = stage(toy, toy.reference_dir, tmp_path / "staged")
    assert any("staging stopped early (RuntimeError: disk on fire)" in n for n in staged.notes)
    assert staged.found["ops"] == "ops.py"  # what was copied before is still graded

    duke = load_assignment("duke_ece661_hw3")
    monkeypatch.setattr(grader.notebook, "extract_notebook", broken)
    sub = tmp_path / "nb"
    sub.mkdir()
    _notebook(sub / "LabRNN.ipynb", ["x = 1\n"])
    staged = stage(duke, sub, tmp_path / "staged-nb")
    assert staged.errors["rnn"].endswith("could not be staged: RuntimeError: disk on fire")


def test_missing_submission_folder_is_a_submission_error(toy, tmp_path):
    from grader.submission import SubmissionError

    with pytest.raises(SubmissionError, match="does not exist"):
        stage(toy, tmp_path / "nope", tmp_path / "staged")


# -- where an error was raised ----------------------------------------------------------------------


def _raise_from(staged_root: Path, rel: str, code: str, call: str):
    path = staged_root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    try:
        eval(call, namespace)
    except BaseException as err:
        return err
    raise AssertionError("the code did not raise")


def test_location_names_file_line_and_class_method_inside_torch(tmp_path):
    staged = StagedSubmission(path=tmp_path)
    err = _raise_from(
        tmp_path,
        "lm/model.py",
        """\
        import torch


        class MultiHeadAttention:
            def forward(self):
                return torch._assert(False, "Torch not compiled with CUDA enabled")
        """,
        "MultiHeadAttention().forward()",
    )
    assert isinstance(err, AssertionError)
    where = student_location(err.__traceback__, staged)
    expected = " (raised in lm/model.py, line 6, in MultiHeadAttention.forward)"
    assert where == expected
    assert describe_exception(err, where) == "AssertionError: Torch not compiled with CUDA enabled" + expected


def test_location_in_a_notebook_names_the_cell(tmp_path):
    from grader.notebook import extract_cells

    ex = extract_cells(
        [
            ("markdown", "# Lab"),
            ("code", "import math\n"),
            ("code", "X = 1\n\n\ndef tokenize(vocab, text):\n    return vocab[text]\n"),
        ],
        name="LabRNN.ipynb",
    )
    staged = StagedSubmission(path=tmp_path, sources={"LabRNN.py": {"notebook": "LabRNN.ipynb", "lines": ex.line_map}})
    err = _raise_from(tmp_path, "LabRNN.py", ex.source, "tokenize({}, 'movie')")
    assert student_location(err.__traceback__, staged) == " (raised in LabRNN.ipynb, cell 3, line 5, in tokenize)"


def test_frames_outside_the_submission_are_not_the_students(tmp_path):
    staged = StagedSubmission(path=tmp_path / "staged")
    staged.path.mkdir()
    try:
        json.loads("{")
    except ValueError as err:
        assert student_location(err.__traceback__, staged) == ""
        assert traceback.extract_tb(err.__traceback__)  # frames exist, none of them the student's


def test_a_message_starting_with_a_blank_line_keeps_its_text():
    err = LookupError(
        "\n" + "*" * 70 + "\n  Resource stopwords not found.\n  Please use the NLTK "
        "Downloader to obtain the resource:\n\n  >>> nltk.download('stopwords')\n" + "*" * 70 + "\n"
    )
    assert exception_text(err).splitlines()[0] == "Resource stopwords not found."
    text = describe_exception(err, " (raised in LabRNN.ipynb, cell 3, line 8, in HyperParams)")
    assert text.startswith("LookupError: Resource stopwords not found. (raised in LabRNN.ipynb")
    assert ">>> nltk.download('stopwords')" in text and "****" not in text
    assert describe_exception(KeyError()) == "KeyError"


def test_library_assertion_in_student_code_is_located_in_the_graded_message(toy, tmp_path):
    from grader.runner import grade

    src = tmp_path / "sub"
    src.mkdir()
    text = (toy.reference_dir / "ops.py").read_text()
    text = text.replace("    return x * s + OFFSET\n", "    return _Mask().build(x) * s + OFFSET\n")
    text += (
        "\n\nclass _Mask:\n    def build(self, x):\n"
        "        torch._assert(False, 'Torch not compiled with CUDA enabled')\n"
    )
    (src / "ops.py").write_text(text)
    line = text.splitlines().index("        torch._assert(False, 'Torch not compiled with CUDA enabled')") + 1
    report = grade(toy, src)
    t = next(t for t in report.tests if t.test_id == "public/test_ops.py::test_scaled_shape")
    assert t.message == (
        f"AssertionError: Torch not compiled with CUDA enabled (raised in ops.py, line {line}, in _Mask.build)"
    )
