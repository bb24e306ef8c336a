"""Mutants and variants as edits of the reference (``grader.mutants``): loading, applying, and
the loud failures when an edit no longer fits the reference. No grading here."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import nbformat
import pytest

from grader.assignment import RubricError, load_assignment
from grader.mutants import (
    EditError,
    check,
    edited_files,
    list_mutants,
    load_edits,
    load_variants,
    materialise,
)
from grader.notebook import extract_cells, notebook_to_py, py_to_notebook

TOY = Path(__file__).parents[1] / "engine_toy"


@pytest.fixture
def toy_copy(tmp_path):
    """A scratch copy of the toy project (reference, suite, mutants): edits only, nothing graded."""
    root = tmp_path / "toyproj"
    shutil.copytree(TOY, root)
    return root


def write_edits(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_toy_mutants_and_variant_load_and_apply(toy_copy):
    toy = load_assignment("toy", root=toy_copy)
    mutants = {m.name: m for m in list_mutants(toy)}
    assert set(mutants) == {
        "no_scale",
        "uses_layer_norm",
        "alias_layer_norm",
        "loop_rows",
        "wrong_layout",
    }
    assert mutants["no_scale"].why == "scaled() ignores s"
    check(toy, list(mutants.values()))
    reference = (toy.reference_dir / "ops.py").read_text()
    edited = edited_files(mutants["no_scale"], toy.reference_dir)["ops.py"]
    assert edited == reference.replace("return x * s + OFFSET", "return x + OFFSET")
    assert toy.variants == ("alt",) and set(load_variants(toy)) == {"alt"}


def test_two_hunks_in_two_files(toy_copy, tmp_path):
    toy = load_assignment("toy", root=toy_copy)
    edits = write_edits(
        tmp_path / "m.yaml",
        """\
        - name: two_places
          why: scaled() ignores s and the offset is 2
          edits:
            - file: ops.py
              old: return x * s + OFFSET
              new: return x + OFFSET
            - file: helper.py
              old: OFFSET = 1.0
              new: OFFSET = 2.0
        """,
    )
    (toy.reference_dir / "helper.py").write_text("OFFSET = 1.0\n")
    (mutant,) = load_edits(edits, "mutant")
    assert len(mutant.edits) == 2 and mutant.files == ("ops.py", "helper.py")
    out = materialise(mutant, toy.reference_dir, tmp_path / "overlay", toy)
    assert sorted(p.name for p in out.iterdir()) == ["helper.py", "ops.py"]  # only what changes
    assert (out / "helper.py").read_text() == "OFFSET = 2.0\n"
    assert "return x + OFFSET" in (out / "ops.py").read_text()
    assert "return x * s + OFFSET" not in (out / "ops.py").read_text()


def test_hunks_apply_in_order_to_the_edited_text(toy_copy, tmp_path):
    toy = load_assignment("toy", root=toy_copy)
    edits = write_edits(
        tmp_path / "m.yaml",
        """\
        - name: chained
          why: the second hunk edits what the first one wrote
          edits:
            - {file: ops.py, old: return x * s + OFFSET, new: return x * s * 3 + OFFSET}
            - {file: ops.py, old: "* 3", new: "* 4"}
        """,
    )
    (mutant,) = load_edits(edits, "mutant")
    assert "return x * s * 4 + OFFSET" in edited_files(mutant, toy.reference_dir)["ops.py"]


def test_stale_old_text_fails_loudly_naming_mutant_file_and_text(toy_copy):
    toy = load_assignment("toy", root=toy_copy)
    ops = toy.reference_dir / "ops.py"
    ops.write_text(ops.read_text().replace("return x * s + OFFSET", "return s * x + OFFSET"))
    with pytest.raises(EditError) as err:
        check(toy, list_mutants(toy))
    message = str(err.value)
    assert message == (
        "mutant `no_scale`: ops.py no longer contains 'return x * s + OFFSET': update tests/mutants/toy.yaml"
    )
    assert isinstance(err.value, RubricError)  # the CLI prints it as one line, exit code 2


def test_ambiguous_old_text_fails(toy_copy, tmp_path):
    toy = load_assignment("toy", root=toy_copy)
    edits = write_edits(
        tmp_path / "m.yaml",
        """\
        - name: ambiguous
          why: return appears in every function
          file: ops.py
          old: "return "
          new: "return -"
        """,
    )
    with pytest.raises(EditError, match=r"mutant `ambiguous`: ops.py contains 'return ' \d+ times"):
        edited_files(load_edits(edits, "mutant")[0], toy.reference_dir)


def test_missing_file_fails(toy_copy, tmp_path):
    toy = load_assignment("toy", root=toy_copy)
    edits = write_edits(
        toy_copy / "tests" / "mutants" / "toy.yaml",
        """\
        - name: ghost
          why: edits a file the reference does not have
          file: ops_v2.py
          old: a
          new: b
        """,
    )
    with pytest.raises(EditError) as err:
        check(toy, list_mutants(toy))
    assert str(err.value) == (
        "mutant `ghost`: ops_v2.py does not exist in reference/toy: update tests/mutants/toy.yaml"
    )
    assert edits.is_file()


def test_a_file_staging_would_ignore_is_refused(toy_copy, tmp_path):
    toy = load_assignment("toy", root=toy_copy)
    (toy.reference_dir / "notes.py").write_text("x = 1\n")
    edits = write_edits(
        tmp_path / "m.yaml",
        """\
        - {name: unused, why: edits a file no test imports, file: notes.py, old: x = 1, new: x = 2}
        """,
    )
    with pytest.raises(EditError, match="notes.py is neither a module nor a provided file of toy"):
        check(toy, load_edits(edits, "mutant"))


@pytest.mark.parametrize(
    "text, problem",
    [
        (
            ("- {name: a, why: x, file: ops.py, old: o, new: n}\n- {name: a, why: y, file: ops.py, old: o, new: n}\n"),
            "mutant `a`: the name is used twice",
        ),
        ("- {name: a, file: ops.py, old: o, new: n}\n", "mutant `a`: `why` must be one line"),
        (
            "- {name: a, why: x, file: ops.py, old: o}\n",
            "each edit needs exactly `file`, `old` and `new`",
        ),
        ("- {name: a, why: x, file: ops.py, old: o, new: n, edits: []}\n", "not both"),
        ("- {name: a, why: x, file: ops.py, old: o, new: n, bug: y}\n", "unknown field(s) bug"),
        ("- {name: a, why: x, file: ops.py, old: '', new: n}\n", "`old` is empty"),
        ("- {name: a, why: x, file: ops.py, old: 1, new: 2}\n", "must be strings"),
        (
            "- {name: a, why: x, file: ../ops.py, old: o, new: n}\n",
            "relative to the reference folder",
        ),
        ("name: a\n", "must be a list of mutants"),
    ],
)
def test_malformed_entries_are_refused(tmp_path, text, problem):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(EditError) as err:
        load_edits(path, "mutant")
    assert problem in str(err.value)


def test_rubric_variant_missing_from_variants_file(toy_copy):
    rubric = toy_copy / "test_suites" / "toy" / "assignment.yaml"
    rubric.write_text(rubric.read_text().replace("variants: [alt]", "variants: [alt, beta]"))
    with pytest.raises(
        EditError,
        match="names variant\\(s\\) beta, which reference/toy/variants.yaml does not define",
    ):
        load_variants(load_assignment("toy", root=toy_copy))
    rubric.write_text(
        rubric.read_text().replace("variants: [alt, beta]", "variants: {alt: reference/toy/variants/alt}")
    )
    with pytest.raises(RubricError, match="'variants' must list names"):
        load_assignment("toy", root=toy_copy)


def test_stale_variant_fails_before_recording(toy_copy):
    from grader.record import record

    toy = load_assignment("toy", root=toy_copy)
    ops = toy.reference_dir / "ops.py"
    ops.write_text(ops.read_text().replace('{"kind": "a", "y": x}', '{"kind": "a", "y": x.clone()}'))
    with pytest.raises(
        EditError,
        match="variant `alt`: ops.py no longer contains .*update reference/toy/variants.yaml",
    ):
        record(toy)
    assert not toy.snapshots_dir.exists()


def test_notebook_edit_is_applied_to_its_percent_text_and_stays_a_notebook(toy_copy, tmp_path):
    """A notebook mutant: the student handed in the notebook with the bug (plus a shell magic)."""
    toy = load_assignment("toy", root=toy_copy)
    source = "# %%\nimport torch\n\n# %%\ndef scaled(x, s):\n    return x * s + 1\n"
    notebook = toy.reference_dir / "ops.ipynb"
    notebook.write_text(nbformat.writes(py_to_notebook(source)))
    edits = write_edits(
        tmp_path / "m.yaml",
        """\
        - name: notebook_no_scale
          why: 'Given as a notebook: scaled() ignores s'
          edits:
            - file: ops.ipynb
              old: |
                # %%
                import torch
              new: |
                # %%
                # !pip install -q torch

                # %%
                import torch
            - {file: ops.ipynb, old: return x * s + 1, new: return x + 1}
        """,
    )
    (mutant,) = load_edits(edits, "mutant")
    out = materialise(mutant, toy.reference_dir, tmp_path / "overlay")
    nb = nbformat.read(out / "ops.ipynb", as_version=4)
    nbformat.validate(nb)
    assert [c.source for c in nb.cells] == [
        "!pip install -q torch",
        "import torch",
        "def scaled(x, s):\n    return x + 1",
    ]
    assert "return x + 1" in notebook_to_py(nb)
    extract = extract_cells([(c.cell_type, c.source) for c in nb.cells], "ops.ipynb")
    assert "return x + 1" in extract.source


def test_lmgrade_mutants_stops_on_a_stale_edit_with_one_line(toy_copy, monkeypatch, capsys):
    from grader.cli import main

    ops = toy_copy / "reference" / "toy" / "ops.py"
    ops.write_text(ops.read_text().replace("return x.sum(-1)", "return x.sum(dim=-1)"))
    monkeypatch.setenv("LMGRADE_HOME", str(toy_copy))
    assert main(["mutants", "toy"]) == 2  # before grading anything
    err = " ".join(capsys.readouterr().err.split())
    assert "mutant `loop_rows`: ops.py no longer contains 'return x.sum(-1)'" in err
    assert "update tests/mutants/toy.yaml" in err
    assert main(["mutants", "toy", "no_such_mutant"]) == 2
    assert "toy has no mutant named no_such_mutant" in " ".join(capsys.readouterr().err.split())
