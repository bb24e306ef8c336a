"""``lmgrade batch`` writes Gradescope's import format, and says why staging cost points.

Four toy submissions with Gradescope metadata (one a group of two): the reference, one whose
ops.py does not parse, one without ops.py at all, the untouched template. 4 gradings.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

from grader.batch import DETAILED_CSV, GRADESCOPE_CSV, run_batch

METADATA = """\
submission_1:
  :submitters:
  - :name: Ada Lovelace
    :sid: '9001'
    :email: ada@uni.edu
  - :name: Alan Turing
    :sid: '9002'
    :email: alan@uni.edu
submission_2:
  :submitters:
  - :name: Bob Syntax
    :sid: '9003'
    :email: bob@uni.edu
submission_3:
  :submitters:
  - :name: Carol Nofile
    :sid: '9004'
    :email: carol@uni.edu
submission_4:
  :submitters:
  - :name: Dan Template
    :sid: '9005'
    :email: dan@uni.edu
"""


def _export(toy, root: Path) -> Path:
    for n in range(1, 5):
        (root / f"submission_{n}").mkdir(parents=True)
    for name in ("ops.py", "helper.py"):
        shutil.copyfile(toy.reference_dir / name, root / "submission_1" / name)
    (root / "submission_2" / "ops.py").write_text("def scaled(x, s)\n    return x * s\n")
    (root / "submission_3" / "operations.py").write_text("def scaled(x, s):\n    return x * s\n")
    shutil.copytree(toy.template_dir, root / "submission_4", dirs_exist_ok=True)
    (root / "submission_metadata.yml").write_text(METADATA)
    return root


def _read(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_gradescope_csv_and_staging_notes(toy, shared_tmp):
    export = _export(toy, shared_tmp / "gradescope" / "export")
    out = shared_tmp / "gradescope" / "out"
    run_batch(toy, export, out, jobs=1)

    header, students = _read(out / GRADESCOPE_CSV)
    questions = [f"{q.number}: {q.name} ({q.points:.1f} pts)" for q in toy.questions]
    assert header == ["Name", "SID", "Email", "Total Score", *questions]
    assert questions == ["1: ops.py (10.0 pts)", "2: decorators (3.0 pts)"]  # the rubric's names
    by_sid = {s["SID"]: s for s in students}
    assert [s["Name"] for s in students] == [
        "Ada Lovelace",
        "Alan Turing",
        "Bob Syntax",
        "Carol Nofile",
        "Dan Template",
    ]  # a group's members each get a row
    for sid in ("9001", "9002"):
        assert by_sid[sid]["Total Score"] == f"{toy.total_points:g}"
        assert [by_sid[sid][q] for q in questions] == [f"{q.points:g}" for q in toy.questions]
    assert by_sid["9001"]["Email"] == "ada@uni.edu"
    for sid in ("9003", "9004", "9005"):
        assert by_sid[sid]["Total Score"] == "0", by_sid[sid]

    _, rows = _read(out / DETAILED_CSV)
    detail = {r["submission_id"]: r for r in rows}
    syntax, nofile = detail["submission_2"], detail["submission_3"]
    assert syntax["status"] == "graded" and syntax["score"] == "0"
    assert "ops.py, line 1: SyntaxError" in syntax["notes"], syntax
    assert nofile["status"] == "graded" and nofile["score"] == "0"  # nothing handed in earns 0, as on Gradescope
    assert "nothing to grade: the submission has no ops.py" in nofile["notes"], nofile
    # nothing lost to staging, nothing said of its files (a note on the machine itself, such as a
    # checkout under /tmp that cannot be made private, may still appear)
    reference = detail["submission_1"]
    assert "ops.py" not in reference["notes"] and float(reference["score"]) == toy.total_points


def test_checkpoints_help_names_its_demo():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    run = [sys.executable, "-m", "grader"]
    top = subprocess.run([*run, "--help"], check=False, capture_output=True, text=True, env=env, timeout=120)
    helped = subprocess.run(
        [*run, "checkpoints", "--help"],
        check=False,
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        timeout=120,
    )
    assert helped.returncode == 0, helped.stderr
    assert "`lmgrade demo cmu_11667_a2`" in helped.stdout, helped.stdout
    assert "    demo " in top.stdout  # the command it names exists
