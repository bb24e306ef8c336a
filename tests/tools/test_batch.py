"""``lmgrade batch`` on a generated Gradescope export of 40 toy submissions.

Grading the 40 submissions is the expensive part (10 distinct gradings once duplicates are
shared), so one test runs the batch, through the command line as a TA would, and checks
everything it wrote in the order a TA would look at it: the grade files, the results files,
report.html, the similarity report. (A module-scoped fixture would be set up once per xdist
worker, i.e. twice.) The other tests here neither grade nor need the toy assignment.
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from grader.batch import DETAILED_CSV, load_metadata, read_export, unpack_export
from grader.mutants import list_mutants, load_variants, materialise
from grader.results import validate

# Three kinds of bug the suite must catch: a wrong value, a Python loop the handout forbids, a
# library call a rule forbids (the other toy mutants would only cost more gradings).
MUTANTS = ("no_scale", "loop_rows", "uses_layer_norm")
BROKEN = {
    "syntax_error": {"ops.py": "def scaled(x, s)\n    return x * s\n"},
    "exits_at_import": {"ops.py": "raise SystemExit(3)\n"},
    "wrong_file_name": {"operations.py": "def scaled(x, s):\n    return x * s + 1\n"},
    "empty": {},  # stages exactly like wrong_file_name: graded once for both
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FULL_MARKS = ("reference", "nested_reference", "alternative")


def _kinds() -> list[str]:
    """40 submissions: what a real class hands in, minus the slow pathologies (hangs, crash
    loops), in 10 distinct stagings."""
    kinds = ["reference"] * 9 + ["nested_reference"] * 3 + ["alternative"] * 2 + ["template"] * 6
    kinds += [f"mutant:{m}" for m in MUTANTS for _ in range(3)]
    kinds += [f"broken:{b}" for b, n in zip(BROKEN, (3, 3, 3, 2)) for _ in range(n)]
    assert len(kinds) == 40
    return kinds


def _write_submission(toy, folder: Path, kind: str) -> None:
    folder.mkdir(parents=True)
    ref = toy.reference_dir
    if kind in ("reference", "nested_reference"):
        dest = folder / "src" if kind == "nested_reference" else folder
        dest.mkdir(exist_ok=True)
        for name in ("ops.py", "helper.py"):
            shutil.copyfile(ref / name, dest / name)
    elif kind == "alternative":
        materialise(load_variants(toy)["alt"], ref, folder, toy)  # ops.py
    elif kind == "template":
        shutil.copytree(toy.template_dir, folder, dirs_exist_ok=True)
    elif kind.startswith("mutant:"):
        shutil.copyfile(ref / "helper.py", folder / "helper.py")
        mutant = next(m for m in list_mutants(toy) if m.name == kind.split(":")[1])
        materialise(mutant, ref, folder, toy)  # ops.py
    else:
        for name, text in BROKEN[kind.split(":")[1]].items():
            (folder / name).write_text(text)


METADATA_ENTRY = """\
submission_{id}:
  :submitters:
{people}  :created_at: 2024-03-01 23:59:{sec:02d}.000000000 -05:00
  :score: !ruby/object:BigDecimal 18:0.0
  :status: :processed
"""


def _people(ids: list[int]) -> str:
    return "".join(f"  - :name: Student {i}\n    :sid: '{9000 + i}'\n    :email: s{i}@uni.edu\n" for i in ids)


def _write_export(base: Path, write) -> tuple[Path, dict[str, str]]:
    """A Gradescope export as its zip unpacks: assignment_<id>_export/ with the metadata (Ruby
    symbol keys, a BigDecimal), one group submission, and one entry whose folder is missing;
    ``write(folder, kind)`` fills each submission's folder. Returns (export, {submission id: kind})."""
    root = base / "assignment_123_export"
    kinds: dict[str, str] = {}
    entries = []
    for i, kind in enumerate(_kinds()):
        sid = f"submission_{5000 + i}"
        write(root / sid, kind)
        kinds[sid] = kind
        members = [i, 100 + i] if i == 1 else [i]  # a group submission
        entries.append(METADATA_ENTRY.format(id=5000 + i, people=_people(members), sec=i % 60))
    entries.append(METADATA_ENTRY.format(id=5999, people=_people([99]), sec=0))  # no folder in the export
    kinds["submission_5999"] = "missing"
    (root / "submission_metadata.yml").write_text("---\n" + "".join(entries))
    return root.parent, kinds


def _grades(out: Path) -> dict[str, dict]:
    with open(out / DETAILED_CSV, newline="") as f:
        return {row["submission_id"]: row for row in csv.DictReader(f)}


def _html_rows(page: str) -> list[list[str]]:
    """The cells of every table row of report.html, as plain text."""

    def text(cell: str) -> str:
        return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", cell)).split())

    return [
        [text(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, flags=re.DOTALL)]
        for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", page, flags=re.DOTALL)
    ]


def test_batch_grades_a_gradescope_export_of_40_submissions(toy, toy_root, shared_tmp, monkeypatch, capsys):
    from grader.cli import main

    export, kinds = _write_export(shared_tmp / "export", lambda folder, kind: _write_submission(toy, folder, kind))
    archive = shutil.make_archive(str(shared_tmp / "export"), "zip", export)  # as Gradescope hands it out
    out = shared_tmp / "batch-out"
    monkeypatch.setenv("LMGRADE_HOME", str(toy_root))
    assert main(["batch", "toy", archive, "-o", str(out), "--jobs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "graded 40 of 41 submissions" in printed and "1 could not be graded" in printed, printed
    assert str(out / "report.html") in printed
    full = toy.total_points
    rows = _grades(out)
    with open(out / "similarity.csv", newline="") as f:
        pairs = list(csv.DictReader(f))

    # grades-detailed.csv: one row per submission, right score, points per question adding up.
    assert list(rows) == list(kinds)  # in the metadata's order
    q_columns = [f"Q{q.number} ({q.points:g})" for q in toy.questions]
    mutant_scores: dict[str, set[float]] = {}
    for sid, kind in kinds.items():
        row = rows[sid]
        if kind == "missing":
            assert row["status"] == "error" and "no files" in row["notes"] and row["score"] == ""
            continue
        assert row["status"] == "graded", row
        score = float(row["score"])
        assert float(row["max_score"]) == full
        assert score == pytest.approx(sum(float(row[c]) for c in q_columns))
        if kind in FULL_MARKS:
            assert score == full, (sid, kind, row)
        elif kind == "template" or kind.startswith("broken:"):
            assert score == 0, (sid, kind, row)
        else:
            assert 0 <= score < full, (sid, kind, row)
            mutant_scores.setdefault(kind, set()).add(score)
    assert len(mutant_scores) == len(MUTANTS) and all(len(s) == 1 for s in mutant_scores.values())

    # Students, emails and sids come from the metadata; a group lists both.
    assert (rows["submission_5000"]["student"], rows["submission_5000"]["email"], rows["submission_5000"]["sid"]) == (
        "Student 0",
        "s0@uni.edu",
        "9000",
    )
    assert rows["submission_5001"]["student"] == "Student 1; Student 101"
    assert rows["submission_5001"]["email"] == "s1@uni.edu; s101@uni.edu"

    # Identical submissions are graded once and share the result; a file found in a subfolder
    # is noted in the results, so those are graded on their own.
    refs = [s for s, k in kinds.items() if k == "reference"]
    nested = [s for s, k in kinds.items() if k == "nested_reference"]
    assert rows[refs[0]]["identical_to"] == "" and all(rows[s]["identical_to"] == refs[0] for s in refs[1:])
    assert rows[nested[0]]["identical_to"] == "" and "src" in rows[nested[0]]["notes"]
    graded = [sid for sid, row in rows.items() if row["status"] == "graded" and not row["identical_to"]]
    assert len(graded) == 10, graded  # ref, nested ref, variant, template, 3 mutants, 3 broken stagings

    # A results.json per graded submission, valid, and identical for identical code.
    for sid, kind in kinds.items():
        path = out / "results" / f"{sid}.json"
        assert path.is_file() == (kind != "missing"), sid
        if path.is_file():
            results = json.loads(path.read_text())
            validate(results)
            assert results["score"] == float(rows[sid]["score"])
    assert (out / "results" / f"{refs[1]}.json").read_text() == (out / "results" / f"{refs[0]}.json").read_text()

    # report.html: the summary, the figures, the per-test pass rates and failure messages.
    page = (out / "report.html").read_text()
    cells = _html_rows(page)
    graded_scores = [float(r["score"]) for r in rows.values() if r["status"] == "graded"]
    summary = cells[
        cells.index(["submissions", "graded", "could not be graded", "mean", "median", "full marks", "zero"]) + 1
    ]
    assert summary == [
        str(len(kinds)),
        "40",
        "1",
        f"{statistics.fmean(graded_scores):.2f} / {full:g}",
        f"{statistics.median(graded_scores):g}",
        str(sum(k in FULL_MARKS for k in kinds.values())),
        str(graded_scores.count(0)),
    ]
    for png in ("score_histogram.png", "pass_rates.png"):
        assert (out / "figures" / png).read_bytes()[:8] == PNG_MAGIC
        assert f"figures/{png}" in page
    per_test = {c[0]: c for c in cells if c and c[0] in {t.test_id for t in toy.tests}}
    assert set(per_test) == {t.test_id for t in toy.tests}
    for spec in toy.tests:
        outcomes = [o for sid, k in kinds.items() if k != "missing" for o in _outcomes(out, sid, spec.test_id)]
        counted = [o for o in outcomes if o != "skipped"]
        rate = per_test[spec.test_id][3]
        if counted:
            share = counted.count("passed") / len(counted)  # the report's own arithmetic, rounding included
            assert rate == f"{100 * share:.0f}% of {len(counted)}", spec.test_id
        else:
            assert rate == f"skipped in all {len(outcomes)}"
    # The template's six copies fail every ops test the same way: the most common message.
    cases = len(_outcomes(out, next(s for s, k in kinds.items() if k == "template"), "hidden/test_ops.py::test_scaled"))
    scaled = per_test["hidden/test_ops.py::test_scaled"][4]
    assert scaled.startswith(f"({6 * cases}) not implemented yet: NotImplementedError (raised in ops.py"), scaled
    # wrong file name or nothing: no test runs, each scores 0, and the notes say why
    assert all(
        "nothing to grade: the submission has no ops.py" in rows[s]["notes"]
        for s, k in kinds.items()
        if k in ("broken:wrong_file_name", "broken:empty")
    )
    assert "SyntaxError" in page
    assert "Submissions that could not be graded" in page and "the export has no files" in page

    # Similarity: copies of the reference are flagged, the template is boilerplate, most alike first.
    flagged = {frozenset((p["submission_a"], p["submission_b"])) for p in pairs if p["flagged"] == "yes"}
    assert all((float(p["similarity"]) >= 0.8) == (p["flagged"] == "yes") for p in pairs)
    assert frozenset(refs[:2]) in flagged and frozenset((refs[0], nested[-1])) in flagged
    templates = {s for s, k in kinds.items() if k == "template"}
    assert not [p for p in pairs if {p["submission_a"], p["submission_b"]} & templates]
    assert [float(p["similarity"]) for p in pairs] == sorted((float(p["similarity"]) for p in pairs), reverse=True)
    assert rows["submission_5001"]["student"] in {p["student_a"] for p in pairs} | {p["student_b"] for p in pairs}
    assert "Similar submissions" in page and f"{len(flagged)} of {len(pairs)} pairs" in page


def _outcomes(out: Path, sid: str, test_id: str) -> list[str]:
    """passed / skipped / failed of each case of one rubric test, from the submission's results.json."""
    tests = [
        t
        for t in json.loads((out / "results" / f"{sid}.json").read_text())["tests"]
        if t["extra_data"]["test_id"].split("[", 1)[0] == test_id
    ]
    assert tests, (sid, test_id)
    return ["skipped" if t["extra_data"]["outcome"] == "skipped" else t["status"] for t in tests]


# -- reading exports ------------------------------------------------------------------------------


def test_metadata_reader_is_lenient(tmp_path):
    plain = tmp_path / "plain.yml"
    plain.write_text("submission_1:\n  submitters:\n  - name: Ada\n    email: ada@x.org\n")
    assert load_metadata(plain) == {"submission_1": [{"name": "Ada", "email": "ada@x.org"}]}
    symbols = tmp_path / "symbols.yml"
    symbols.write_text(":submission_2:\n  :submitters:\n  - :name: Bob\n    :sid: !ruby/string '7'\n")
    assert load_metadata(symbols) == {"submission_2": [{"name": "Bob", "sid": "7"}]}


def test_a_zipped_export_reads_like_the_folder(tmp_path):
    def write(folder: Path, kind: str) -> None:
        folder.mkdir(parents=True)
        (folder / "ops.py").write_text(f"# {kind}\n")

    folder, kinds = _write_export(tmp_path / "export", write)
    archive = Path(shutil.make_archive(str(tmp_path / "export"), "zip", folder))
    from_zip = read_export(unpack_export(archive, tmp_path / "unzipped"))
    from_folder = read_export(unpack_export(folder, tmp_path / "unused"))
    assert [(s.id, s.submitters) for s in from_zip] == [(s.id, s.submitters) for s in from_folder]
    assert [s.id for s in from_zip] == list(kinds)
    assert next(s for s in from_zip if s.id == "submission_5999").folder is None
    assert next(s for s in from_zip if s.id == "submission_5001").people("sid") == "9001; 9101"


def test_plain_folder_of_folders(tmp_path):
    for name in ("alice", "bob", "__MACOSX", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("not a submission")
    subs = read_export(tmp_path)
    assert [(s.id, s.people("name")) for s in subs] == [("alice", "alice"), ("bob", "bob")]


def test_a_submission_the_grader_fails_on_is_an_error_row_and_the_batch_goes_on(tmp_path, monkeypatch):
    """Without grading anything: ``grade`` itself raising, or a run where nothing ran (the
    grader's set-up failed), is an error row with the reason, never a zero the student earned."""
    import grader.runner
    from grader.assignment import load_assignment
    from grader.batch import run_batch
    from grader.report import GradeReport, TestResult

    mila = load_assignment("mila_ift6135_a2")

    def fake_grade(assignment, folder, *, results_path=None, label=None, **_):
        name = Path(folder).name
        if name == "crashes":
            raise RuntimeError("the grader broke")
        outcome = "not run" if name == "not_run" else "passed"
        tests = [
            TestResult(
                test_id=t.test_id,
                outcome=outcome,
                score=t.points if outcome == "passed" else 0.0,
                max_score=t.points,
                question=t.question,
                question_name=t.question_name,
            )
            for t in assignment.tests
        ]
        notes = ["secure grading could not be set up"] if outcome == "not run" else []
        report = GradeReport(assignment=assignment, submission=label, tests=tests, notes=notes, execution_time=0.1)
        if results_path is not None:
            from grader.results import write_results

            write_results(report, results_path)
        return report

    monkeypatch.setattr(grader.runner, "grade", fake_grade)
    export = tmp_path / "export"
    for name, text in (("crashes", "x = 1\n"), ("not_run", "x = 2\n"), ("fine", "x = 3\n")):
        (export / name).mkdir(parents=True)
        (export / name / "lstm_solution.py").write_text(text)
    result = run_batch(mila, export, tmp_path / "out", jobs=2)
    rows = _grades(tmp_path / "out")
    assert rows["crashes"]["status"] == "error" and "RuntimeError: the grader broke" in rows["crashes"]["notes"]
    assert rows["not_run"]["status"] == "error" and "secure grading could not be set up" in rows["not_run"]["notes"]
    assert rows["fine"]["status"] == "graded" and float(rows["fine"]["score"]) == mila.total_points
    assert [r.graded for r in result.rows] == [False, True, False]  # read_export's order: sorted names
    page = (tmp_path / "out" / "report.html").read_text()
    assert "RuntimeError: the grader broke" in page and "nothing was run" in page


# -- the command line -----------------------------------------------------------------------------


def _lmgrade(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "LMGRADE_"))}
    return subprocess.run(
        [sys.executable, "-m", "grader", *args],
        check=False,
        capture_output=True,
        text=True,
        env={**clean, "COLUMNS": "80", **env},
        timeout=120,
    )


def test_cli_batch_reports_bad_input_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("not an export")
    (tmp_path / "one" / "alice").mkdir(parents=True)
    cases = {
        ("batch", "no_such_assignment", str(tmp_path / "empty"), "-o", str(tmp_path / "o")): "unknown assignment",
        ("batch", "mila_ift6135_a2", str(tmp_path / "missing"), "-o", str(tmp_path / "o")): "does not exist",
        ("batch", "mila_ift6135_a2", str(tmp_path / "empty"), "-o", str(tmp_path / "o")): "no submissions in",
        (
            "batch",
            "mila_ift6135_a2",
            str(tmp_path / "file.txt"),
            "-o",
            str(tmp_path / "o"),
        ): "neither a folder nor a zip",
        ("batch", "mila_ift6135_a2", str(tmp_path / "one"), "-o", str(tmp_path / "o"), "--jobs", "0"): "--jobs",
        (
            "batch",
            "mila_ift6135_a2",
            str(tmp_path / "one"),
            "-o",
            str(tmp_path / "file.txt"),
        ): "cannot create the output folder",
        (
            "batch",
            "mila_ift6135_a2",
            str(tmp_path / "one"),
            "-o",
            str(tmp_path / "o"),
            "--time-budget",
            "-1",
        ): "--time-budget",
    }
    for args, message in cases.items():
        proc = _lmgrade(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(lines) == 1, (args, proc.stdout, proc.stderr)
        assert lines[0].startswith("error: ") and message in lines[0] and "Traceback" not in proc.stderr, args
    assert not (tmp_path / "o").exists()  # nothing is written before the input is known to be good


def test_cli_verbs_answer_help():
    top = _lmgrade("--help")
    assert top.returncode == 0
    for verb in ("batch", "build-autograder", "build-handout"):
        assert re.search(rf"^    {verb} +\S", top.stdout, flags=re.MULTILINE), top.stdout  # its help on the same line
        proc = _lmgrade(verb, "--help")
        assert proc.returncode == 0 and "usage: lmgrade " + verb in proc.stdout and "example:" in proc.stdout
