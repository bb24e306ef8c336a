"""Checks from inside a notebook (or a terminal), and the export step that builds the zip to upload.

In a notebook cell::

    import lmgrade
    lmgrade.check("1.3")          # that question's public tests, on the notebook's current code
    lmgrade.export()              # checks the file names and writes submission.zip

``check`` runs the public tests of a question (or all of them) with pytest, in this process, so a
repeated check in a running kernel pays no import again. Functions the notebook defined are graded
as they are now in the kernel (the notebook need not be saved first): the notebook's namespace
stands in for the module the handout names (``LabRNN`` for ``LabRNN.ipynb``); every other module is
read from its file. The result shows as a table in Jupyter (``_repr_html_``) and as text elsewhere,
with each test's points from the rubric. The kernel's working folder, ``sys.path``, imported modules
and random number generators are as they were before the check.

``python -m lmgrade check [QUESTION]`` and ``python -m lmgrade export`` do the same from a terminal
on the files of the current folder (or ``--submission DIR``).
"""

from __future__ import annotations

import html
import json
import os
import random
import sys
import tempfile
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from grader.assignment import Assignment, is_public, load_assignment

SAVE_FIRST = "Save the notebook first (File > Save): the zip holds the files as they are on disk."


class CheckError(ValueError):
    """A check that cannot run as asked (no handout here, an unknown question)."""


# -- finding the handout -------------------------------------------------------------------------


def find_assignment(start: Path | None = None) -> Assignment:
    """The assignment of the handout in ``start`` (or a folder above it)."""
    start = Path(start or Path.cwd()).resolve()
    for folder in [start, *start.parents]:
        rubrics = sorted(folder.glob("test_suites/*/assignment.yaml"))
        if len(rubrics) == 1:
            return load_assignment(rubrics[0].parent.name, root=folder)
        if len(rubrics) > 1:
            raise CheckError(
                f"{folder} holds several assignments ({', '.join(r.parent.name for r in rubrics)}): "
                "run the check from a handout folder"
            )
    raise CheckError(f"no handout found in {start} or above it (expected test_suites/<id>/assignment.yaml)")


# -- results -------------------------------------------------------------------------------------


@dataclass
class Row:
    test: str
    question: str
    outcome: str
    points: float
    max_points: float
    message: str = ""


@dataclass
class CheckResult:
    """What ``check`` found: shown as a table by Jupyter, as text by ``print`` or a terminal."""

    assignment: str
    question: str | None
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def points(self) -> float:
        return round(sum(r.points for r in self.rows), 6)

    @property
    def max_points(self) -> float:
        return round(sum(r.max_points for r in self.rows), 6)

    @property
    def passed(self) -> bool:
        return all(r.outcome == "passed" for r in self.rows)

    def title(self) -> str:
        what = f"question {self.question}" if self.question else "all questions"
        return (
            f"{self.assignment}, {what}: {sum(r.outcome == 'passed' for r in self.rows)} of {len(self.rows)} "
            f"public tests passed, {self.points:g} / {self.max_points:g} points"
        )

    def __repr__(self) -> str:
        lines = [self.title()]
        for r in self.rows:
            mark = "PASS" if r.outcome == "passed" else r.outcome.upper()
            lines.append(f"  {mark:7s} {r.points:g}/{r.max_points:g}  {r.test}")
            if r.message and r.outcome != "passed":
                lines += [f"           {line}" for line in r.message.splitlines()[:6]]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        body = "".join(
            f"<tr><td style='color:{'#2e7d32' if r.outcome == 'passed' else '#c62828'}'>{esc(r.outcome)}</td>"
            f"<td>{r.points:g} / {r.max_points:g}</td><td><code>{esc(r.test)}</code></td>"
            "<td><pre style='margin:0;white-space:pre-wrap'>"
            f"{esc(r.message if r.outcome != 'passed' else '')}</pre></td></tr>"
            for r in self.rows
        )
        notes = "".join(f"<li>{esc(n)}</li>" for n in self.notes)
        return (
            f"<div><b>{esc(self.title())}</b><table><tr><th>status</th><th>points</th><th>test</th>"
            f"<th>message</th></tr>{body}</table>{f'<ul>{notes}</ul>' if notes else ''}</div>"
        )


# -- check -----------------------------------------------------------------------------------------


def check(
    question: str | None = None,
    *,
    submission: str | Path | None = None,
    module: str | None = None,
    namespace: dict | None = None,
) -> CheckResult:
    """Run the public tests of ``question`` (all questions if None) and return what they found.

    ``submission``: the folder with the files (default: the handout folder). In a notebook, the
    notebook's namespace (``namespace``, default: IPython's) stands in for the module ``module``
    names, or the one whose template's definitions it holds most of.
    """
    folder = Path(submission or Path.cwd()).resolve()
    assignment = find_assignment(folder)
    tests = [t for t in assignment.tests if is_public(t.test_id) and (question is None or t.question == question)]
    if not tests:
        known = sorted({t.question for t in assignment.tests if is_public(t.test_id)})
        raise CheckError(
            f"{assignment.id} has no public tests for question {question!r} (questions: {', '.join(known)})"
        )
    if namespace is None:
        namespace = _ipython_namespace()
    live = _live_module(assignment, namespace, module) if namespace is not None else None
    with _kernel_state_kept(), tempfile.TemporaryDirectory(prefix="lmgrade-check-") as tmp:
        outcomes = Path(tmp) / "outcomes.jsonl"
        args = [str(assignment.suite_dir / t.test_id.split("::")[0]) for t in tests]
        args = list(dict.fromkeys(args))
        selected = {t.test_id for t in tests}
        args += [
            "-p",
            "grader.plugin",
            "-p",
            "no:cacheprovider",
            "-qq",
            "--no-header",
            "--assert=plain",
            "--import-mode=importlib",
            "--rootdir",
            str(assignment.suite_dir),
            "-c",
            os.devnull,
            "--submission",
            str(folder),
            "--lmgrade-assignment",
            assignment.id,
            "--lmgrade-outcomes",
            str(outcomes),
        ]
        if live is not None:
            sys.modules[live[1].__name__] = live[1]
            args += ["--lmgrade-live", f"{live[0]}={live[1].__name__}"]
        import contextlib
        import io

        import pytest

        printed = io.StringIO()  # pytest's own report: the table below says it better
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            code = pytest.main(args, plugins=[_Only(selected)])
        events = (
            [json.loads(line) for line in outcomes.read_text(encoding="utf-8").splitlines() if line]
            if outcomes.is_file()
            else []
        )
    result = _result(assignment, question, tests, events, live)
    if code not in (0, 1, 5):  # pytest itself failed: show why
        result.notes.append("pytest stopped: " + " | ".join(printed.getvalue().strip().splitlines()[-5:]))
    return result


class _Only:
    """Keeps only the question's tests (its file may hold others)."""

    def __init__(self, selected: set[str]):
        self.selected = selected

    def pytest_collection_modifyitems(self, config, items):
        def test_id(item):
            path = Path(str(item.path))
            for parent in path.parents:
                if (parent / "assignment.yaml").is_file():
                    return path.relative_to(parent).as_posix() + "::" + item.nodeid.split("::", 1)[1]
            return item.nodeid

        keep = [i for i in items if test_id(i).split("[", 1)[0] in self.selected]
        items[:] = keep


def _result(assignment: Assignment, question, tests, events, live) -> CheckResult:
    results = {e["test"]: e for e in events if e.get("event") == "result"}
    notes = [e["text"] for e in events if e.get("event") == "note"]
    rows = []
    for spec in tests:
        cases = [e for t, e in results.items() if t.split("[", 1)[0] == spec.test_id] or [
            {"outcome": "not run", "message": "this test did not run", "test": spec.test_id}
        ]
        share = spec.points / len(cases)
        for e in cases:
            ok = e.get("outcome") == "passed"
            rows.append(
                Row(
                    e["test"],
                    spec.question,
                    e.get("outcome", "not run"),
                    share if ok else 0.0,
                    share,
                    e.get("message", ""),
                )
            )
    result = CheckResult(assignment.id, question, rows, notes)
    if live is not None:
        result.notes.append(f"{live[2]}: checked as it is now in this notebook's kernel")
    return result


def _ipython_namespace() -> dict | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else shell.user_ns


def _live_module(
    assignment: Assignment, namespace: dict, module: str | None
) -> tuple[str, types.ModuleType, str] | None:
    """(alias, a module holding the notebook's definitions, its notebook's name), or None."""
    candidates = {
        alias: names for alias, names in assignment.modules.items() if any(n.endswith(".ipynb") for n in names)
    }
    if not candidates:
        return None
    if module is not None:
        alias = next(
            (a for a, names in candidates.items() if module in (a, *(Path(n).stem for n in names), *names)), None
        )
        if alias is None:
            raise CheckError(f"{module!r} is not a notebook of {assignment.id} ({', '.join(candidates)})")
    else:
        alias = max(candidates, key=lambda a: _defined_overlap(assignment, candidates[a], namespace))
        if _defined_overlap(assignment, candidates[alias], namespace) == 0:
            return None
    notebook = next(n for n in candidates[alias] if n.endswith(".ipynb"))
    live = types.ModuleType(Path(notebook).stem)
    live.__dict__.update({k: v for k, v in namespace.items() if not k.startswith("_")})
    live.__file__ = notebook
    return alias, live, notebook


def _defined_overlap(assignment: Assignment, names, namespace: dict) -> int:
    """How many of the template's top-level definitions for these file names the namespace has."""
    import ast

    defined = set()
    for name in names:
        path = assignment.template_dir / name
        source = path.with_suffix(".py") if path.suffix == ".ipynb" else path
        if source.is_file():
            try:
                tree = ast.parse(source.read_text(encoding="utf-8"))
            except SyntaxError:
                continue
            defined |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return sum(1 for n in defined if n in namespace)


class _kernel_state_kept:
    """What a check changes in the process, put back: working folder, sys.path, the modules the
    run imported, random number generators."""

    def __enter__(self):
        self.cwd = os.getcwd()
        self.path = list(sys.path)
        self.modules = set(sys.modules)
        self.rng = [random.getstate()]
        try:
            import numpy as np

            self.rng.append(np.random.get_state())
        except ImportError:
            self.rng.append(None)
        torch = sys.modules.get("torch")
        self.rng.append(torch.random.get_rng_state() if torch is not None else None)
        return self

    def __exit__(self, *exc):
        os.chdir(self.cwd)
        sys.path[:] = self.path
        for name in set(sys.modules) - self.modules:
            module = sys.modules.get(name)
            if getattr(module, "__file__", "") and "lmgrade-" in str(getattr(module, "__file__", "")):
                del sys.modules[name]  # a staged copy of a student module: not the kernel's
        random.setstate(self.rng[0])
        if self.rng[1] is not None:
            import numpy as np

            np.random.set_state(self.rng[1])
        torch = sys.modules.get("torch")
        if self.rng[2] is not None and torch is not None:
            torch.random.set_rng_state(self.rng[2])
        return False


# -- export ----------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    path: Path | None
    files: list[str]
    problems: list[str]
    notes: list[str]

    def __repr__(self) -> str:
        lines = [f"wrote {self.path} with {', '.join(self.files)}" if self.path else "no zip was written"]
        lines += [f"  problem: {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        head = f"<b>wrote <code>{esc(str(self.path))}</code></b>" if self.path else "<b>no zip was written</b>"
        items = "".join(f"<li style='color:#c62828'>{esc(p)}</li>" for p in self.problems)
        items += "".join(f"<li>{esc(n)}</li>" for n in self.notes)
        return f"<div>{head}: {esc(', '.join(self.files))}<ul>{items}</ul></div>"


def export(submission: str | Path | None = None, out: str | Path = "submission.zip") -> ExportResult:
    """Check that the files the handout asks for are here under their names, and zip them."""
    import difflib

    folder = Path(submission or Path.cwd()).resolve()
    assignment = find_assignment(folder)
    files, problems, notes = [], [], []
    present = {p.name for p in folder.iterdir() if p.is_file()}
    for names in assignment.modules.values():
        here = [n for n in names if (folder / n).is_file()]
        if here:
            files += here
            if len(here) > 1:
                notes.append(
                    f"both {' and '.join(here)} are here: the grader grades the one you changed; "
                    "keep only the one you work in"
                )
            continue
        near = difflib.get_close_matches(names[0], sorted(present), n=1, cutoff=0.6)
        required = any(n in assignment.files_required for n in names) or not assignment.files_required
        if near:
            problems.append(f"{near[0]} should be named {names[0]}: rename it, the grader looks for that name")
        elif required:
            problems.append(f"{names[0]} is missing")
    if any(f.endswith(".ipynb") for f in files):
        notes.append(SAVE_FIRST)
    if problems:
        return ExportResult(None, files, problems, notes)
    target = (folder / out) if not Path(out).is_absolute() else Path(out)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in files:
            zf.write(folder / name, name)
    return ExportResult(target, files, problems, notes)


# -- command line ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lmgrade", description="Check your work and export it.")
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("check", help="run the public tests of a question (or all) and show your points")
    p.add_argument("question", nargs="?", help="question number, e.g. 1.3 (default: every question)")
    p.add_argument("--submission", type=Path, default=None, help="folder with your files (default: here)")
    p = sub.add_parser("export", help="check the file names and write the zip to upload")
    p.add_argument("--submission", type=Path, default=None, help="folder with your files (default: here)")
    p.add_argument("-o", "--out", default="submission.zip", help="zip to write (default submission.zip)")
    args = parser.parse_args(argv)
    try:
        if args.verb == "check":
            result = check(args.question, submission=args.submission, namespace={})
            print(result)  # noqa: T201
            return 0 if result.passed else 1
        result = export(args.submission, args.out)
        print(result)  # noqa: T201
        return 0 if result.path else 1
    except CheckError as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201
        return 2
