"""``lmgrade batch``: grade a whole export of submissions offline, in parallel.

Input is a Gradescope "Export Submissions" folder or zip (``submission_metadata.yml`` beside
one ``submission_<id>/`` folder per submission) or a plain folder of folders (one per student).
Each submission is graded by ``grader.runner.grade`` (a child process per submission, so a
thread pool is enough); one that cannot be graded becomes an error row and the batch goes on.
Submissions whose staged files are identical (the untouched template, a copied solution) are
graded once and share the result, so identical code always gets the identical grade.

Written to the output folder:

* ``grades-detailed.csv``: one row per submission (students, emails, ids, status,
  score, points per question, the submission it is identical to, and notes: never empty for a
  submission that lost points to staging, such as a syntax error or a missing file);
* ``grades.csv``: Gradescope's import format (upload it as it is), one row per student (a group's members
  each get the group's score): ``Name, SID, Email, Total Score`` and one column per question of
  the rubric, named as Gradescope names them (``1: ops.py (10.0 pts)``); a submission that was
  not graded has empty scores, so an upload leaves that student's grade alone;
* ``results/<submission id>.json``: the results.json Gradescope would have received;
* ``report.html`` with ``figures/*.png``: score histogram, pass rate per test, the most common
  failure messages per test, and the submission pairs whose code is most alike;
* ``similarity.csv``: every pair of submissions sharing code beyond the template, most alike first;
* ``batch-state.json`` and ``.batch-state/``: what finished, by content hash (``BatchState``).

Ctrl-C or SIGTERM stops the batch within seconds: the files above are still written for what
finished, the rest marked "not graded: batch was interrupted", and ``--resume`` grades only
those (and any submission changed since). ``--executor slurm`` grades through a submitit job
array instead of this process's pool (``grader.cluster``), with the same files at the end.

Similarity uses copydetect's winnowed fingerprints per handout file with the template as
boilerplate, so the code every student was given never counts as shared.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from grader.assignment import Assignment, load_assignment

if TYPE_CHECKING:  # the runner is imported when grading starts, not by every `lmgrade` command
    from grader.cluster import ClusterOptions
    from grader.report import GradeReport
    from grader.runner import StopFlag

METADATA_FILE = "submission_metadata.yml"
SIMILARITY_THRESHOLD = 0.8
NOISE_CHARS = 25  # copydetect's noise threshold: shorter shared runs (of filtered code) are ignored
GUARANTEE_CHARS = 30  # copydetect's guarantee threshold: longer shared runs are always found
TOP_MESSAGES = 3
MAX_REPORTED_PAIRS = 200
IGNORED_FOLDERS = ("__MACOSX",)
GRADESCOPE_TIME_LIMIT = 600  # seconds: Gradescope's default limit per submission
# An export is untrusted input: bounds checked before anything is extracted or parsed.
MAX_EXPORT_BYTES = 8 * 2**30  # total uncompressed size of a zip export
MAX_EXPORT_ENTRIES = 200_000
MAX_COMPRESSION_RATIO = 200  # a zip bomb's entries expand 1000:1 and more; source code ~5:1
MAX_METADATA_BYTES = 64 * 2**20
MAX_YAML_ALIASES = 100  # Gradescope's metadata uses none
MAX_YAML_NODES = 2_000_000  # values read once aliases are expanded (an alias bomb expands to billions)
MAX_SIMILARITY_FILE_CHARS = 512 * 1024  # a file past this is left out of the similarity report
SIMILARITY_TIME_LIMIT = 600.0  # CPU seconds for all pairs; the report says if it stopped early
INTERRUPTED_SIMILARITY = "not computed: the batch was interrupted (it is with --resume)"
GRADESCOPE_CSV = "grades.csv"  # Gradescope's import format: the file to upload
DETAILED_CSV = "grades-detailed.csv"  # one row per submission, with status, ids and notes
STATE_FILE = "batch-state.json"  # what finished, by content hash: `--resume` reads it
STATE_REPORTS = ".batch-state"  # the finished reports themselves, one file per content hash
STATE_VERSION = 1
NOT_GRADED = "not graded: batch was interrupted"
# what a batch writes into its output folder: `--force` removes these, and only these
OUTPUTS = (
    DETAILED_CSV,
    GRADESCOPE_CSV,
    "report.html",
    "similarity.csv",
    STATE_FILE,
    STATE_REPORTS,
    "results",
    "figures",
    "submitit",
)


class BatchError(RuntimeError):
    """The batch cannot start as asked (no export, nothing in it); the message says why."""


# -- reading an export ----------------------------------------------------------------------------


@dataclass
class Submission:
    """One submission of the export: its id, its folder, and who submitted it."""

    id: str
    folder: Path | None
    submitters: list[dict] = field(default_factory=list)  # [{name, email, sid}]

    def people(self, key: str) -> str:
        return "; ".join(str(s.get(key, "")) for s in self.submitters if s.get(key))


def read_export(export: Path) -> list[Submission]:
    """The submissions of a Gradescope export folder, or of a plain folder of folders."""
    root = _export_root(export)
    metadata_path = root / METADATA_FILE
    folders = {
        p.name: p
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith(".") and p.name not in IGNORED_FOLDERS
    }
    if not metadata_path.is_file():
        return [Submission(id=name, folder=path, submitters=[{"name": name}]) for name, path in folders.items()]
    submissions = []
    for key, submitters in load_metadata(metadata_path).items():
        folder = folders.pop(key, None) or folders.pop(f"submission_{key}", None)
        submissions.append(Submission(id=folder.name if folder else key, folder=folder, submitters=submitters))
    submissions += [Submission(id=name, folder=path) for name, path in folders.items()]  # not in the metadata
    return submissions


def _export_root(export: Path) -> Path:
    """The folder holding the metadata file: the export itself or its only subfolder."""
    if (export / METADATA_FILE).is_file():
        return export
    subfolders = [p for p in export.iterdir() if p.is_dir() and p.name not in IGNORED_FOLDERS]
    if len(subfolders) == 1 and (subfolders[0] / METADATA_FILE).is_file():
        return subfolders[0]
    return export


class _LenientLoader(yaml.SafeLoader):
    """SafeLoader that reads Ruby-tagged values (``!ruby/object:BigDecimal ...``) as plain data,
    and refuses a document with more than ``MAX_YAML_ALIASES`` aliases (an alias bomb)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > MAX_YAML_ALIASES:
                raise BatchError(f"{METADATA_FILE} uses more than {MAX_YAML_ALIASES} YAML aliases: refused")
        return super().compose_node(parent, index)


def _construct_tagged(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_LenientLoader.add_multi_constructor("!", _construct_tagged)


def load_metadata(path: Path) -> dict[str, list[dict]]:
    """{submission key: [{name, email, sid}]} from Gradescope's ``submission_metadata.yml``.

    Gradescope writes it from Ruby, so keys look like ``:submitters:`` / ``:name:``; plain keys
    are accepted too, and so is a list of entries that carry their own ``id``.
    """
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise BatchError(f"{path} is larger than {MAX_METADATA_BYTES // 2**20} MB: refused")
    try:
        data = yaml.load(path.read_text(encoding="utf-8", errors="replace"), Loader=_LenientLoader) or {}
    except yaml.YAMLError as err:
        raise BatchError(f"{path} is not valid YAML: {str(err)[:300]}") from err
    data = _plain_keys(data, [MAX_YAML_NODES])
    if isinstance(data, list):
        data = {str(e.get("id") or e.get("submission_id") or i): e for i, e in enumerate(data) if isinstance(e, dict)}
    out = {}
    for key, entry in data.items():
        entry = entry if isinstance(entry, dict) else {}
        people = entry.get("submitters") or entry.get("users") or []
        out[str(key)] = [
            {k: str(p[k]) for k in ("name", "email", "sid") if p.get(k) is not None}
            for p in people
            if isinstance(p, dict)
        ]
    return out


def _plain_keys(value, budget: list[int]):
    """Ruby symbols to plain strings, recursively: ``:name`` -> ``name``; at most ``budget[0]``
    values visited (aliases make a small document a huge tree)."""
    budget[0] -= 1
    if budget[0] < 0:
        raise BatchError(f"{METADATA_FILE} expands to more than {MAX_YAML_NODES} values: refused")
    if isinstance(value, dict):
        return {str(k).lstrip(":"): _plain_keys(v, budget) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_keys(v, budget) for v in value]
    return value


# -- grading --------------------------------------------------------------------------------------


@dataclass
class Row:
    """The outcome for one submission: a report, or the reason there is none."""

    submission: Submission
    report: GradeReport | None = None
    error: str = ""
    seconds: float = 0.0
    same_as: str = ""  # the submission whose identical staged files were graded instead
    interrupted: bool = False  # not graded because the batch was stopped: --resume grades it
    resumed: bool = False  # graded by an earlier, interrupted run of the same batch

    @property
    def graded(self) -> bool:
        return self.report is not None


class BatchState:
    """What an output folder's batch has finished, so ``--resume`` grades only the rest.

    Finished reports are kept by the content hash of the staged files (``staged_key``), not by
    submission id: a student who resubmitted between the runs has a new hash and is graded
    again, and identical code keeps getting the identical grade. Each report is written once,
    to ``.batch-state/<hash>.json``; the small index ``batch-state.json`` (submission id ->
    hash, and whether the last run was interrupted) is rewritten atomically after each one, so
    the work per finished submission stays constant and even a batch killed with SIGKILL
    resumes from what it had finished. Cluster shards share the reports folder and keep an
    index each (``submitit/shard-K-of-N.json``), merged into the batch's when the array ends.
    """

    def __init__(self, path: Path, assignment: Assignment, reports_dir: Path, submissions: dict | None = None):
        self.path, self.assignment, self.reports_dir = path, assignment, reports_dir
        self.submissions: dict[str, str] = submissions or {}  # submission id -> staged key
        self.interrupted = False
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, assignment: Assignment, reports_dir: Path) -> BatchState:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise BatchError(f"cannot read {path} to resume from it: {err}") from err
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise BatchError(f"{path} is not a batch state this lmgrade can resume from")
        if data.get("assignment") != assignment.id:
            raise BatchError(
                f"{path} is a batch of {data.get('assignment')}, not {assignment.id}: give another output folder"
            )
        return cls(path, assignment, reports_dir, dict(data.get("submissions") or {}))

    def has(self, key: str | None) -> bool:
        return key is not None and (self.reports_dir / f"{key}.json").is_file()

    def report_for(self, key: str | None, label: str) -> GradeReport | None:
        """The finished report for these staged files, or None if they were never graded."""
        from grader.report import GradeReport, TestResult

        if not self.has(key):
            return None
        try:
            data = json.loads((self.reports_dir / f"{key}.json").read_text(encoding="utf-8"))
            tests = [TestResult(**t) for t in data["tests"]]
            return GradeReport(
                assignment=self.assignment,
                submission=label,
                tests=tests,
                notes=list(data["notes"]),
                execution_time=float(data["execution_time"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # damaged: graded again

    def record(self, submission_id: str, key: str | None, report: GradeReport) -> None:
        from grader.results import write_json_atomic

        if key is not None and not self.has(key):
            write_json_atomic(
                {
                    "tests": [asdict(t) for t in report.tests],
                    "notes": list(report.notes),
                    "execution_time": report.execution_time,
                },
                self.reports_dir / f"{key}.json",
            )
        self.adopt(submission_id, key)

    def adopt(self, submission_id: str, key: str | None) -> None:
        """Index a submission whose report is in the reports folder (a cluster shard's)."""
        with self._lock:
            if key is not None:
                self.submissions[submission_id] = key
            self._save()

    def save(self, *, interrupted: bool) -> None:
        with self._lock:
            self.interrupted = interrupted
            self._save()

    def _save(self) -> None:
        from grader.results import write_json_atomic

        write_json_atomic(
            {
                "version": STATE_VERSION,
                "assignment": self.assignment.id,
                "interrupted": self.interrupted,
                "submissions": self.submissions,
                "reports": sorted(set(self.submissions.values())),
            },
            self.path,
        )


def grade_all(
    assignment: Assignment,
    submissions: list[Submission],
    results_dir: Path,
    *,
    jobs: int = 2,
    dedupe: bool = True,
    budget: float | None = None,
    on_done=None,
    stop: StopFlag | None = None,
    state: BatchState | None = None,
    warm: bool = True,
) -> list[Row]:
    """Grade every submission (``jobs`` at once); rows come back in the input's order.

    With ``dedupe``, submissions whose staged files are identical (the untouched template
    handed in twice, a copied solution) are graded once and share the report, so identical
    code always gets the identical grade. With ``state``, staged files an earlier run of the
    batch finished are not graded again, and each finished grading is recorded there. Once
    ``stop`` is requested, running gradings stop within a second and the rest are not started:
    their rows say the batch was interrupted.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    hashed = dedupe or state is not None  # staging each submission once more costs a copy of its files
    keys = {s.id: staged_key(assignment, s.folder) if s.folder is not None and hashed else None for s in submissions}
    first: dict[str, str] = {}  # staged key -> the first submission with it (the one graded)
    for s in submissions:
        if keys[s.id] is not None:
            first.setdefault(keys[s.id], s.id)
    rows: dict[str, Row] = {}
    todo = []
    for s in submissions:
        report = state.report_for(keys[s.id], s.id) if state is not None else None
        if report is None:
            todo.append(s)
            continue
        same_as = first[keys[s.id]] if dedupe and first[keys[s.id]] != s.id else ""
        rows[s.id] = Row(s, report=report, resumed=True, same_as=same_as)
        results = results_dir / f"{_safe_name(s.id)}.json"
        if not results.is_file():
            from grader.results import write_results

            write_results(report, results)
        if on_done:
            on_done(rows[s.id])
    originals, copies = split_duplicates(todo, keys) if dedupe else (todo, [])

    def grade_and_record(s: Submission) -> Row:
        row = grade_one(assignment, s, results_dir, budget=budget, stop=stop, warm=warm)
        if state is not None and row.report is not None:
            state.record(s.id, keys[s.id], row.report)
        return row

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(grade_and_record, s) for s in originals]
        for future in as_completed(futures):
            row = future.result()
            rows[row.submission.id] = row
            if on_done:
                on_done(row)
    for submission, original in copies:
        rows[submission.id] = _copy_row(rows[original.id], submission, results_dir)
        if state is not None and rows[submission.id].report is not None:
            state.record(submission.id, keys[submission.id], rows[submission.id].report)
        if on_done:
            on_done(rows[submission.id])
    return [rows[s.id] for s in submissions]


def split_duplicates(
    submissions: list[Submission], keys: dict[str, str | None]
) -> tuple[list[Submission], list[tuple[Submission, Submission]]]:
    """(submissions to grade, [(duplicate, the earlier submission it is identical to)]), by
    their ``staged_key`` (None: graded on its own)."""
    first: dict[str, Submission] = {}
    originals, copies = [], []
    for s in submissions:
        key = keys.get(s.id)
        if key is not None and key in first:
            copies.append((s, first[key]))
            continue
        if key is not None:
            first[key] = s
        originals.append(s)
    return originals, copies


def staged_key(assignment: Assignment, folder: Path) -> str | None:
    """A hash of what grading sees: the staged files and what staging noted about them."""
    from grader.sandbox import run_folder
    from grader.submission import stage

    with tempfile.TemporaryDirectory(prefix="lmgrade-key-", dir=run_folder()) as tmp:
        try:
            staged = stage(assignment, folder, Path(tmp) / "staged")
        except Exception:
            return None
        digest = hashlib.sha256(json.dumps([staged.found, staged.errors, staged.notes], sort_keys=True).encode())
        for path in sorted(p for p in staged.path.rglob("*") if p.is_file() and p.name != staged.STATE_FILE):
            digest.update(path.relative_to(staged.path).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()


def _copy_row(original: Row, submission: Submission, results_dir: Path) -> Row:
    if original.interrupted:
        return Row(submission, error=NOT_GRADED, interrupted=True)
    source = results_dir / f"{_safe_name(original.submission.id)}.json"
    if source.is_file():
        shutil.copyfile(source, results_dir / f"{_safe_name(submission.id)}.json")
    return Row(submission, report=original.report, error=original.error, same_as=original.submission.id)


def grade_one(
    assignment: Assignment,
    submission: Submission,
    results_dir: Path,
    *,
    budget: float | None = None,
    stop: StopFlag | None = None,
    warm: bool = True,
) -> Row:
    """Never raises: whatever goes wrong becomes the row's error. ``warm``: test processes are
    forked from the warm grader (``grader.warm``); False starts each cold (benchmarks compare)."""
    from grader.runner import NOTHING_TO_GRADE, grade

    started = time.time()
    if submission.folder is None:
        return Row(submission, error="the export has no files for this submission")
    if stop is not None and stop.requested:
        return Row(submission, error=NOT_GRADED, interrupted=True)
    results = results_dir / f"{_safe_name(submission.id)}.json"
    try:
        extra = {"budget": budget} if budget else {}  # tests not finished by then score 0, as on Gradescope
        report = grade(
            assignment, submission.folder, results_path=results, label=submission.id, warm=warm, stop=stop, **extra
        )
    except Exception as err:
        return Row(submission, error=f"{type(err).__name__}: {err}", seconds=time.time() - started)
    if report.interrupted:  # half a grading is no grade: --resume grades it whole
        results.unlink(missing_ok=True)
        return Row(submission, error=NOT_GRADED, interrupted=True, seconds=time.time() - started)
    handed_in_nothing = any(n.startswith(NOTHING_TO_GRADE) for n in report.notes)
    if report.tests and all(t.outcome == "not run" for t in report.tests) and not handed_in_nothing:
        # the suite never started (the grader's set-up failed): not a zero the student earned
        # (none of the handout's files is a zero the student earned, as on Gradescope)
        why = (
            "; ".join(report.notes) or (report.log_tail.strip().splitlines() or ["the test process did not start"])[-1]
        )
        return Row(submission, error=f"nothing was run: {why}", seconds=time.time() - started)
    return Row(submission, report=report, seconds=time.time() - started)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "submission"


# -- the grade files: detailed, and Gradescope's import format --------------------------------


def write_grades_csv(assignment: Assignment, rows: list[Row], path: Path) -> Path:
    questions = assignment.questions
    header = ["submission_id", "student", "email", "sid", "status", "score", "max_score"]
    header += [f"Q{q.number} ({q.points:g})" for q in questions] + ["identical_to", "notes"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            s = row.submission
            line = [s.id, s.people("name"), s.people("email"), s.people("sid")]
            if row.report is None:
                status = "not graded" if row.interrupted else "error"
                writer.writerow(
                    line
                    + [status, "", f"{assignment.total_points:g}"]
                    + [""] * len(questions)
                    + [row.same_as, row.error]
                )
                continue
            per_q = question_points(row.report)
            notes = "; ".join(row.report.notes)
            writer.writerow(
                line
                + ["graded", f"{row.report.score:g}", f"{row.report.max_score:g}"]
                + [f"{per_q.get(q.number, 0.0):g}" for q in questions]
                + [row.same_as, notes]
            )
    return path


def gradescope_question_column(question) -> str:
    """A question's column as Gradescope writes it in its own grade exports: ``1: ops.py (10.0 pts)``."""
    return f"{question.number}: {question.name} ({question.points:.1f} pts)"


def write_gradescope_csv(assignment: Assignment, rows: list[Row], path: Path) -> Path:
    """Gradescope's import format: one row per student, ``Name, SID, Email, Total Score`` and a
    column per question; a group submission gives each member its score. A submission without
    a grade (an error, an interrupted batch) has empty scores: uploading them changes nothing."""
    questions = assignment.questions
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "SID", "Email", "Total Score"] + [gradescope_question_column(q) for q in questions])
        for row in rows:
            if row.report is not None:
                per_q = question_points(row.report)
                scores = [f"{row.report.score:g}"] + [f"{per_q.get(q.number, 0.0):g}" for q in questions]
            else:
                scores = [""] * (1 + len(questions))
            people = row.submission.submitters or [{"name": row.submission.id}]
            for person in people:
                writer.writerow([person.get("name", ""), person.get("sid", ""), person.get("email", ""), *scores])
    return path


def question_points(report: GradeReport) -> dict[str, float]:
    points: dict[str, float] = {}
    for t in report.tests:
        points[t.question] = round(points.get(t.question, 0.0) + t.score, 6)
    return points


# -- statistics for the report --------------------------------------------------------------------


@dataclass
class Tally:
    """Pass count and failure messages of one rubric test over the batch."""

    test_id: str
    question: str
    points: float
    runs: int = 0
    passed: int = 0
    skipped: int = 0  # skips (pytest.skip in the test) count neither as passes nor as failures
    failures: Counter = field(default_factory=Counter)  # normalised message -> count
    examples: dict[str, str] = field(default_factory=dict)  # normalised message -> one real message

    @property
    def pass_rate(self) -> float | None:
        """Passes over the runs that were not skipped; None when every run was skipped."""
        counted = self.runs - self.skipped
        return self.passed / counted if counted else None

    def common_failures(self, n: int = TOP_MESSAGES) -> list[tuple[str, int]]:
        return [(self.examples[key], count) for key, count in self.failures.most_common(n)]


def tally_tests(assignment: Assignment, rows: list[Row]) -> list[Tally]:
    """Pass rate and failure messages per rubric test (parametrised cases pooled)."""
    stats = {t.test_id: Tally(t.test_id, t.question, t.points) for t in assignment.tests}
    for row in rows:
        for t in row.report.tests if row.report else ():
            base = t.test_id.split("[", 1)[0]
            s = stats.setdefault(base, Tally(base, t.question, t.max_score))
            s.runs += 1
            if t.passed or t.outcome == "skipped":
                s.passed += t.passed
                s.skipped += t.outcome == "skipped"
                continue
            first_line = (t.message.strip().splitlines() or [t.outcome])[0][:300]
            key = re.sub(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", "#", first_line)
            s.failures[key] += 1
            s.examples.setdefault(key, f"{t.outcome}: {first_line}" if t.outcome != "failed" else first_line)
    return list(stats.values())


def score_summary(rows: list[Row], max_score: float) -> dict:
    scores = [r.report.score for r in rows if r.report]
    missing = sum(1 for r in rows if r.interrupted)
    return {
        "submissions": len(rows),
        "graded": len(scores),
        "errors": len(rows) - len(scores) - missing,
        "missing": missing,
        "max_score": max_score,
        "mean": statistics.fmean(scores) if scores else 0.0,
        "median": statistics.median(scores) if scores else 0.0,
        "full_marks": sum(1 for s in scores if s >= max_score),
        "zero": sum(1 for s in scores if s == 0),
    }


# -- similarity -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    similarity_a: float  # share of a's own (non-template) code also found in b
    similarity_b: float
    shared_chars: int  # of filtered code, in a
    files: tuple[str, ...]

    @property
    def similarity(self) -> float:
        return max(self.similarity_a, self.similarity_b)


def submission_code(assignment: Assignment, folder: Path) -> dict[str, str]:
    """{handout file: source} for the module files the submission has (notebooks: code cells)."""
    code = {}
    for names in assignment.modules.values():
        for name in names:
            path = _find_file(folder, name)
            if path is not None:
                code[names[0]] = _read_code(path)
                break
    return code


def _find_file(folder: Path, name: str) -> Path | None:
    if (folder / name).is_file():
        return folder / name
    matches = sorted(
        (p for p in folder.rglob(Path(name).name) if p.is_file() and not set(p.parts) & set(IGNORED_FOLDERS)),
        key=lambda p: len(p.parts),
    )
    return matches[0] if matches else None


def _read_code(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix != ".ipynb":
        return text
    try:
        cells = json.loads(text).get("cells", [])
    except (json.JSONDecodeError, AttributeError):
        return ""
    return "\n\n".join(
        "".join(c.get("source", "")) if isinstance(c.get("source"), list) else str(c.get("source", ""))
        for c in cells
        if isinstance(c, dict) and c.get("cell_type") == "code"
    )


class SimilarityStopped(RuntimeError):
    """The similarity report ran out of time; ``pairs`` holds what was compared."""

    def __init__(self, message: str, pairs: list[Pair]):
        super().__init__(message)
        self.pairs = pairs


def find_similar(
    assignment: Assignment,
    submissions: list[Submission],
    *,
    min_similarity: float = 0.0,
    time_limit: float = SIMILARITY_TIME_LIMIT,
    stop=None,
) -> list[Pair]:
    """Every pair sharing code beyond the template, most alike first. Files larger than
    ``MAX_SIMILARITY_FILE_CHARS`` are left out; past ``time_limit`` seconds of this thread's CPU
    time (the batch runs it beside the gradings), or once ``stop`` is requested, the comparison
    stops and ``SimilarityStopped`` carries the pairs found so far."""
    import numpy as np
    from copydetect import CodeFingerprint, compare_files

    window = GUARANTEE_CHARS - NOISE_CHARS + 1

    def fingerprint(name: str, text: str, boilerplate=None, win: int = window):
        return CodeFingerprint(f"{Path(name).stem}.py", NOISE_CHARS, win, boilerplate, fp=io.StringIO(text))

    boilerplate = {
        name: np.unique(np.array(sorted(fingerprint(name, text, win=1).hashes), dtype=np.int64))
        for name, text in submission_code(assignment, assignment.template_dir).items()
    }
    started = time.thread_time()
    prints: dict[str, dict] = {}
    skipped = 0
    for s in submissions:
        if stop is not None and stop.requested:
            raise SimilarityStopped(INTERRUPTED_SIMILARITY, [])
        if s.folder is not None:
            code = submission_code(assignment, s.folder)
            skipped += sum(1 for text in code.values() if len(text) > MAX_SIMILARITY_FILE_CHARS)
            prints[s.id] = {
                name: fingerprint(name, text, boilerplate.get(name))
                for name, text in code.items()
                if len(text) <= MAX_SIMILARITY_FILE_CHARS
            }
    pairs = []
    for n, (a, b) in enumerate(combinations(prints, 2)):
        if stop is not None and stop.requested:
            raise SimilarityStopped(INTERRUPTED_SIMILARITY, [])
        if time.thread_time() - started > time_limit:
            done = sorted(pairs, key=lambda p: (-p.similarity, p.a, p.b))
            raise SimilarityStopped(
                f"the similarity report stopped after {time_limit:g} CPU seconds ({n} pairs compared)", done
            )
        pair = _compare(a, prints[a], b, prints[b], compare_files)
        if pair is not None and pair.similarity > min_similarity:
            pairs.append(pair)
    if skipped:
        logging.getLogger("lmgrade.batch").warning(
            "%d file(s) over %d KB left out of the similarity report", skipped, MAX_SIMILARITY_FILE_CHARS // 1024
        )
    return sorted(pairs, key=lambda p: (-p.similarity, p.a, p.b))


def _compare(a: str, prints_a: dict, b: str, prints_b: dict, compare_files) -> Pair | None:
    """Token-weighted similarity over the files both submissions have."""
    covered_a = covered_b = shared_a = shared_b = 0.0
    shared_chars, files = 0, []
    for name in sorted(prints_a.keys() & prints_b.keys()):
        fa, fb = prints_a[name], prints_b[name]
        covered_a += fa.token_coverage
        covered_b += fb.token_coverage
        if not set(fa.hashes) & set(fb.hashes):
            continue
        overlap, (sim_a, sim_b), _ = compare_files(fa, fb)
        shared_a += sim_a * fa.token_coverage
        shared_b += sim_b * fb.token_coverage
        shared_chars += int(overlap)
        files.append(name)
    if not files or not covered_a or not covered_b:
        return None
    return Pair(a, b, round(shared_a / covered_a, 4), round(shared_b / covered_b, 4), shared_chars, tuple(files))


def write_similarity_csv(pairs: list[Pair], submissions: list[Submission], path: Path, threshold: float) -> Path:
    names = {s.id: s.people("name") for s in submissions}
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "submission_a",
                "student_a",
                "submission_b",
                "student_b",
                "similarity",
                "share_of_a",
                "share_of_b",
                "shared_chars",
                "files",
                "flagged",
            ]
        )
        for p in pairs:
            writer.writerow(
                [
                    p.a,
                    names.get(p.a, ""),
                    p.b,
                    names.get(p.b, ""),
                    f"{p.similarity:.3f}",
                    f"{p.similarity_a:.3f}",
                    f"{p.similarity_b:.3f}",
                    p.shared_chars,
                    " ".join(p.files),
                    "yes" if p.similarity >= threshold else "",
                ]
            )
    return path


# -- report.html ----------------------------------------------------------------------------------


def plot_histogram(scores: list[float], max_score: float, path: Path) -> Path:
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state: safe in any thread
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 3.5), dpi=100)
    ax = fig.add_subplot()
    if 0 < max_score <= 40 and float(max_score).is_integer():
        # one bar per point, centred on it: 12 and 13 of 13 are not lumped together
        ax.hist(scores, bins=[b - 0.5 for b in range(int(max_score) + 2)], color="#4c72b0", edgecolor="white")
        ax.set_xlim(-0.5, max_score + 0.5)
    else:
        ax.hist(scores, bins=20, range=(0, max_score or 1), color="#4c72b0", edgecolor="white")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"score (of {max_score:g})")
    ax.set_ylabel("submissions")
    ax.set_title("Autograded scores")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_pass_rates(stats: list[Tally], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 1.2 + 0.28 * len(stats)), dpi=100)
    ax = fig.add_subplot()
    labels = [s.test_id + ("" if s.pass_rate is not None else " (skipped)") for s in stats][::-1]
    rates = [100 * s.pass_rate if s.pass_rate is not None else 0.0 for s in stats][::-1]
    ax.barh(range(len(stats)), rates, color=["#55a868" if r >= 50 else "#c44e52" for r in rates])
    ax.set_yticks(range(len(stats)), labels, fontsize=7)
    ax.set_xlim(0, 100)
    ax.set_xlabel("submissions passing (%)")
    ax.set_title("Pass rate per test")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_report(
    assignment: Assignment,
    rows: list[Row],
    pairs: list[Pair],
    out: Path,
    threshold: float,
    *,
    similarity_error: str = "",
) -> Path:
    from grader.build import render

    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    stats = tally_tests(assignment, rows)
    summary = score_summary(rows, assignment.total_points)
    plot_histogram([r.report.score for r in rows if r.report], assignment.total_points, figures / "score_histogram.png")
    plot_pass_rates(stats, figures / "pass_rates.png")
    names = {r.submission.id: r.submission.people("name") for r in rows}
    flagged = [p for p in pairs if p.similarity >= threshold]
    html = render(
        "report.html.j2",
        assignment=assignment,
        summary=summary,
        stats=stats,
        rows=rows,
        question_means=_question_means(assignment, rows),
        flagged=flagged[:MAX_REPORTED_PAIRS],
        n_flagged=len(flagged),
        n_pairs=len(pairs),
        threshold=threshold,
        names=names,
        generated=time.strftime("%Y-%m-%d %H:%M"),
        results_name=_safe_name,
        errors=[r for r in rows if not r.graded and not r.interrupted],
        similarity_error=similarity_error,
        missing=[r for r in rows if r.interrupted],
    )
    path = out / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


def _question_means(assignment: Assignment, rows: list[Row]) -> list[tuple]:
    graded = [question_points(r.report) for r in rows if r.report]
    return [
        (q, statistics.fmean(p.get(q.number, 0.0) for p in graded) if graded else 0.0) for q in assignment.questions
    ]


# -- the whole batch ------------------------------------------------------------------------------


@dataclass
class BatchResult:
    rows: list[Row]
    pairs: list[Pair]
    grades_csv: Path
    report: Path
    interrupted: str = ""  # the signal that stopped the batch ("SIGINT"), or ""

    @property
    def missing(self) -> int:
        return sum(1 for r in self.rows if r.interrupted)

    @property
    def resumed(self) -> int:
        return sum(1 for r in self.rows if r.resumed)


def run_batch(
    assignment: Assignment,
    export: Path,
    out: Path,
    *,
    jobs: int = 2,
    dedupe: bool = True,
    budget: float | None = None,
    threshold: float = SIMILARITY_THRESHOLD,
    progress: bool = False,
    resume: bool = False,
    force: bool = False,
    on_stop=None,
    cluster: ClusterOptions | None = None,
    console=None,
    warm: bool = True,
) -> BatchResult:
    """Grade an export, then write the grade files, results/, report.html and similarity.csv into ``out``.

    An ``out`` that already holds files is refused unless ``resume`` (grade only what the batch
    state there does not have) or ``force`` (grade everything again, replacing the batch's files).
    SIGINT and SIGTERM stop the batch (``on_stop(signal name)`` is called at once): running
    gradings are stopped, the rest are not started, and the files are written for what finished,
    with the missing submissions marked; a second signal gives up at once (KeyboardInterrupt).

    With ``cluster`` on a cluster executor, the submissions are graded by a submitit job array
    (``grade_shard``, one task per shard, identical submissions in the same shard), each task
    recording into its own state file; the shards' states are merged into the batch's, and
    the rows come from it exactly as ``--resume`` reads them, so the files are the local path's.
    """
    from grader.runner import StopFlag
    from grader.sandbox import run_folder

    # in the run folder, beside the gradings' own (LMGRADE_RUN_ROOT under root): one place to
    # look for what a batch leaves behind, and it leaves nothing, however it is stopped
    with tempfile.TemporaryDirectory(prefix="lmgrade-export-", dir=run_folder()) as tmp:
        root = unpack_export(Path(export), Path(tmp))
        submissions = read_export(root)
        if not submissions:
            raise BatchError(
                f"no submissions in {export}: expected {METADATA_FILE} beside the "
                "submission folders, or one folder per student"
            )
        state = _prepare_out(assignment, out, resume=resume, force=force)
        stop = StopFlag()
        # the similarity report runs beside the gradings: the CPU the warm grader's start-up and
        # the gradings' waits leave idle is enough for it on a class-sized batch
        similarity = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmgrade-similarity")
        similar = similarity.submit(find_similar, assignment, submissions, stop=stop)
        similarity.shutdown(wait=False)
        try:
            with _stop_on_signals(stop, on_stop):
                if cluster is not None and cluster.on_cluster:
                    if progress and console is None:
                        from rich.console import Console

                        console = Console(stderr=True, highlight=False)
                    _grade_on_cluster(
                        assignment,
                        root,
                        submissions,
                        out,
                        state,
                        cluster,
                        jobs=jobs,
                        dedupe=dedupe,
                        budget=budget,
                        stop=stop,
                        console=console if progress else None,
                        temporary=root != Path(export),
                    )  # a zip extracted into tmp
                rows = _grade_with_progress(
                    assignment, submissions, out / "results", jobs, dedupe, budget, progress, stop, state, warm
                )
        except BaseException:
            stop.request(stop.signal_name or "error")  # the similarity thread ends too
            raise
        state.save(interrupted=stop.requested)
        grades = write_grades_csv(assignment, rows, out / DETAILED_CSV)  # first: the grades matter most
        write_gradescope_csv(assignment, rows, out / GRADESCOPE_CSV)
        if stop.requested:  # the TA asked to stop: no minutes of similarity now, it comes with --resume
            pairs, similarity_error = [], INTERRUPTED_SIMILARITY
        else:
            try:
                pairs, similarity_error = similar.result(), ""
            except SimilarityStopped as stopped:
                pairs, similarity_error = stopped.pairs, str(stopped)
            except Exception as err:
                pairs, similarity_error = [], f"{type(err).__name__}: {err}"
    write_similarity_csv(pairs, submissions, out / "similarity.csv", threshold)
    report = write_report(assignment, rows, pairs, out, threshold, similarity_error=similarity_error)
    return BatchResult(
        rows=rows, pairs=pairs, grades_csv=grades, report=report, interrupted=stop.signal_name if stop.requested else ""
    )


def _grade_on_cluster(
    assignment: Assignment,
    root: Path,
    submissions: list[Submission],
    out: Path,
    state: BatchState,
    cluster: ClusterOptions,
    *,
    jobs: int,
    dedupe: bool,
    budget: float | None,
    stop,
    console,
    temporary: bool,
) -> None:
    """Grade what ``state`` lacks as a job array; merge the shards' states into ``state``.

    Shards are cut by staged key, round robin, so identical submissions land in one shard and
    are graded once. The export is copied into the output folder when it is a temporary
    extraction (the compute nodes must see it), and removed afterwards.
    """
    from grader.cluster import run_array

    keys = {s.id: staged_key(assignment, s.folder) if s.folder is not None else None for s in submissions}
    groups: dict[str, list[str]] = {}
    for s in submissions:
        if s.folder is None or state.has(keys[s.id]):
            continue  # nothing to grade, or graded by an earlier run
        group = keys[s.id] if dedupe and keys[s.id] is not None else f"id:{s.id}"
        groups.setdefault(group, []).append(s.id)
    if not groups:
        return
    n = min(cluster.shards, len(groups))
    shards: list[list[str]] = [[] for _ in range(n)]
    for i, ids in enumerate(groups.values()):
        shards[i % n].extend(ids)
    shared = out / "submitit"
    copied = None
    if temporary:
        copied = out / ".export"
        shutil.rmtree(copied, ignore_errors=True)
        shutil.copytree(root, copied)
        root = copied
    try:
        tasks = [
            (assignment.id, assignment.root, root, ids, out, jobs, dedupe, budget, f"shard-{k + 1}-of-{n}")
            for k, ids in enumerate(shards)
        ]
        run_array(
            grade_shard, tasks, cluster, shared, name=f"lmgrade-batch-{assignment.id}", console=console, stop=stop
        )
    finally:
        for k in range(n):
            path = shared / f"shard-{k + 1}-of-{n}.json"
            if path.is_file():
                shard = BatchState.load(path, assignment, state.reports_dir)
                for sid, key in shard.submissions.items():
                    state.adopt(sid, key)
        if copied is not None:
            shutil.rmtree(copied, ignore_errors=True)


def grade_shard(
    assignment_id: str,
    assignment_root: Path,
    export_root: Path,
    ids: list[str],
    out: Path,
    jobs: int,
    dedupe: bool,
    budget: float | None,
    shard: str,
) -> int:
    """One array task: grade the submissions ``ids`` of the export into ``out/results``, recording
    into ``out/submitit/<shard>.json``. Runs on a compute node; returns how many it graded."""
    assignment = load_assignment(assignment_id, root=Path(assignment_root))
    wanted = set(ids)
    submissions = [s for s in read_export(Path(export_root)) if s.id in wanted]
    path = Path(out) / "submitit" / f"{shard}.json"
    # a retried task keeps what its first attempt finished
    reports = Path(out) / STATE_REPORTS  # shared by the shards: one file per content hash
    state = BatchState.load(path, assignment, reports) if path.is_file() else BatchState(path, assignment, reports)
    rows = grade_all(
        assignment, submissions, Path(out) / "results", jobs=jobs, dedupe=dedupe, budget=budget, state=state
    )
    state.save(interrupted=False)
    return sum(1 for r in rows if r.graded)


def _prepare_out(assignment: Assignment, out: Path, *, resume: bool, force: bool) -> BatchState:
    """Check the output folder against --resume/--force and create it; the batch state to use."""
    state_path = out / STATE_FILE
    if out.is_dir() and any(out.iterdir()) and not (resume or force):
        raise BatchError(
            f"{out} is not empty: give --resume to continue the batch graded there, "
            "or --force to grade again and replace its files"
        )
    if resume and out.is_dir() and any(out.iterdir()):
        if not state_path.is_file():
            raise BatchError(
                f"{out} holds no {STATE_FILE}, so there is nothing to resume: "
                "give --force to grade again and replace its files"
            )
        return BatchState.load(state_path, assignment, out / STATE_REPORTS)
    if force and out.is_dir():
        for name in OUTPUTS:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BatchError(f"cannot create the output folder {out}: {err}") from err
    state = BatchState(state_path, assignment, out / STATE_REPORTS)
    state.save(interrupted=False)
    return state


@contextmanager
def _stop_on_signals(stop: StopFlag, on_stop=None):
    """SIGINT/SIGTERM request ``stop`` (the pool's gradings poll it); a second one raises
    KeyboardInterrupt. Only the main thread may install handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.request(signal.Signals(signum).name)
        if on_stop is not None:
            on_stop(stop.signal_name)

    old = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def unpack_export(export: Path, tmp: Path) -> Path:
    """A zip export is extracted into ``tmp``; a folder is used as it is."""
    if not export.exists():
        raise BatchError(f"export {export} does not exist")
    if export.is_dir():
        return export
    if zipfile.is_zipfile(export):
        try:
            with zipfile.ZipFile(export) as zf:
                check_zip(zf, export)
                zf.extractall(tmp / "export")
        except (zipfile.BadZipFile, OSError) as err:
            raise BatchError(f"cannot extract {export}: {err}") from err
        (tmp / "export").mkdir(parents=True, exist_ok=True)
        entries = [p for p in (tmp / "export").iterdir() if p.name not in IGNORED_FOLDERS]
        # a zip of one folder (Gradescope's assignment_<id>_export/, or a zipped folder of folders)
        return entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp / "export"
    raise BatchError(f"{export} is neither a folder nor a zip of a submissions export")


def check_zip(zf: zipfile.ZipFile, name: Path) -> None:
    """Refuse a zip whose entries are too many, too large in total, or expand like a bomb."""
    infos = zf.infolist()
    if len(infos) > MAX_EXPORT_ENTRIES:
        raise BatchError(f"{name} has {len(infos)} entries (more than {MAX_EXPORT_ENTRIES}): refused")
    total = sum(i.file_size for i in infos)
    if total > MAX_EXPORT_BYTES:
        raise BatchError(
            f"{name} would extract to {total / 2**30:.1f} GB (more than {MAX_EXPORT_BYTES / 2**30:g} GB): refused"
        )
    for i in infos:
        if i.file_size > 1_000_000 and i.file_size > MAX_COMPRESSION_RATIO * max(i.compress_size, 1):
            raise BatchError(
                f"{name}: {i.filename} expands {i.file_size // max(i.compress_size, 1)}:1 (a zip bomb?): refused"
            )


def _grade_with_progress(
    assignment, submissions, results_dir, jobs, dedupe, budget, progress, stop=None, state=None, warm: bool = True
) -> list[Row]:
    options = {"jobs": jobs, "dedupe": dedupe, "budget": budget, "stop": stop, "state": state, "warm": warm}
    if not progress:
        return grade_all(assignment, submissions, results_dir, **options)
    from rich import progress as rp

    columns = (
        rp.TextColumn("grading"),
        rp.BarColumn(),
        rp.MofNCompleteColumn(),
        rp.TimeRemainingColumn(),
        rp.TextColumn("{task.description}"),
    )
    with rp.Progress(*columns) as bar:
        task = bar.add_task("", total=len(submissions))

        def done(row: Row) -> None:
            score = f"{row.report.score:g}" if row.report else "not graded" if row.interrupted else "error"
            kept = " (from the earlier run)" if row.resumed else ""
            bar.update(task, advance=1, description=f"{row.submission.id}: {score}{kept}")

        return grade_all(assignment, submissions, results_dir, on_done=done, **options)


# -- command line ---------------------------------------------------------------------------------


def add_parsers(subparsers) -> None:
    import argparse

    p = subparsers.add_parser(
        "batch",
        help="grade a Gradescope export in parallel: grades.csv to upload, report.html, similarity",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Grade every submission of a Gradescope 'Export Submissions' folder or zip\n"
        f"({METADATA_FILE} beside submission_<id>/ folders), or of a plain folder with one\n"
        "folder per student, N at a time. A submission that cannot be graded becomes an\n"
        "error row; the batch goes on. Identical submissions are graded once. Writes into OUT:\n"
        f"  {GRADESCOPE_CSV}         Gradescope's import format: Name, SID, Email, Total Score,\n"
        "                     one column per question (upload it as it is)\n"
        f"  {DETAILED_CSV} student, email, sid, submission id, status, score, points per\n"
        "                     question, notes (why points were lost to staging, why not graded)\n"
        "  results/<id>.json  the results.json Gradescope would have received\n"
        "  report.html        score histogram, pass rate per test, most common failures,\n"
        "                     the most similar pairs (figures/ beside it)\n"
        "  similarity.csv     every pair sharing code beyond the template (copydetect)\n"
        f"  {STATE_FILE}   what finished, by content hash (for --resume)\n"
        "Ctrl-C (or SIGTERM) stops the batch within seconds and still writes grades.csv and\n"
        "report.html for what finished, marking the rest 'not graded'; --resume grades the rest.",
        epilog="example:\n  lmgrade batch cmu_11667_a2 assignment_123_export.zip -o grading/ --jobs 4\n"
        "  lmgrade batch cmu_11667_a2 export.zip -o grading/ --executor slurm --shards 20 "
        "--partition cpu --cpus-per-task 4 --jobs 4   # a Slurm job array, merged at the end\n"
        "  lmgrade batch cmu_11667_a2 assignment_123_export.zip -o grading/ --resume   # after Ctrl-C",
    )
    p.add_argument("assignment", metavar="ID", help="assignment id (see `lmgrade list`)")
    p.add_argument("export", type=Path, metavar="EXPORT", help="the export: a folder or a zip")
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        required=True,
        metavar="OUT",
        help="output folder (created; one that holds files needs --resume or --force)",
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the batch in OUT: submissions whose staged files it already graded "
        "are kept, the rest (and changed ones) are graded",
    )
    again.add_argument(
        "--force", action="store_true", help="grade everything again, replacing the batch's files in OUT"
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=os.cpu_count() or 2,
        metavar="N",
        help="submissions graded at once (default: the number of CPUs, %(default)s here)",
    )
    p.add_argument(
        "--similarity-threshold",
        type=float,
        default=SIMILARITY_THRESHOLD,
        metavar="FRACTION",
        help="flag a pair when one submission shares at least this fraction of its own "
        f"non-template code with the other (default {SIMILARITY_THRESHOLD})",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=GRADESCOPE_TIME_LIMIT,
        metavar="SECONDS",
        help="per submission: tests not finished by then score 0, as on Gradescope "
        f"(default {GRADESCOPE_TIME_LIMIT}, Gradescope's default limit; 0: none)",
    )
    p.add_argument(
        "--grade-duplicates",
        action="store_true",
        help="grade every submission even when its staged files are identical to another's",
    )
    from grader.cluster import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_batch)


def cmd_batch(args) -> int:
    assignment = load_assignment(args.assignment)
    if args.time_budget < 0:
        print(f"error: --time-budget must be positive, or 0 for none (got {args.time_budget:g})", file=sys.stderr)  # noqa: T201
        return 2
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1 (got {args.jobs})", file=sys.stderr)  # noqa: T201
        return 2
    if not 0 < args.similarity_threshold <= 1:
        print(f"error: --similarity-threshold must be in (0, 1] (got {args.similarity_threshold:g})", file=sys.stderr)  # noqa: T201
        return 2
    from grader.cluster import ClusterError, options_from_args

    try:
        cluster = options_from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201
        return 2

    def stopping(name: str) -> None:
        print(  # noqa: T201
            f"\n{name}: stopping the batch (the running gradings are stopped; press Ctrl-C again to "
            "quit at once, without writing grades.csv)",
            file=sys.stderr,
            flush=True,
        )

    try:
        result = run_batch(
            assignment,
            args.export,
            args.out,
            jobs=args.jobs,
            dedupe=not args.grade_duplicates,
            budget=args.time_budget or None,
            threshold=args.similarity_threshold,
            progress=True,
            resume=args.resume,
            force=args.force,
            on_stop=stopping,
            cluster=cluster,
        )
    except BatchError as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201
        return 2
    except ClusterError as err:  # what the array finished is in the batch state already
        print(  # noqa: T201
            f"error: {err}; the submissions graded so far are kept: run the same command with --resume "
            "to grade the rest",
            file=sys.stderr,
        )
        return 1
    summary = score_summary(result.rows, assignment.total_points)
    flagged = sum(1 for p in result.pairs if p.similarity >= args.similarity_threshold)
    if result.resumed:
        print(  # noqa: T201
            f"resumed: {result.resumed} submission(s) kept from the earlier run, "
            f"{summary['submissions'] - result.resumed} graded now"
        )
    print(  # noqa: T201
        f"graded {summary['graded']} of {summary['submissions']} submissions, mean score "
        f"{summary['mean']:.2f} / {summary['max_score']:g}; {summary['errors']} could not be graded "
        f"(see report.html); {flagged} similar pair(s) flagged"
    )
    if result.interrupted:
        print(  # noqa: T201
            f"interrupted ({result.interrupted}): {result.missing} submission(s) not graded, marked "
            f"'not graded' in {DETAILED_CSV}; run the same command with --resume to grade them"
        )
    out = result.grades_csv.parent
    print(  # noqa: T201
        f"wrote {result.grades_csv}, {out / GRADESCOPE_CSV} (to upload to Gradescope), {result.report}, "
        f"{out / 'similarity.csv'}, {out / 'results'}/"
    )
    return 130 if result.interrupted else 0
