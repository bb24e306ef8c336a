"""The ``lmgrade`` command. Each verb's entry function parses, delegates, and prints."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from grader import __version__, project_root
from grader.assignment import RubricError, list_assignments, load_assignment

# wide enough for tables when writing to a file or a CI log (rich's default there is 80 columns)
console = Console(highlight=False, width=max(120, shutil.get_terminal_size((120, 24)).columns))
err_console = Console(stderr=True, highlight=False)

STATUS_STYLE = {
    "passed": "green",
    "failed": "red",
    "error": "red",
    "timeout": "magenta",
    "crashed": "magenta",
    "skipped": "yellow",
    "not run": "yellow",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from grader.envs import CourseEnvError

    try:
        return int(args.func(args) or 0)
    except RubricError as err:  # one line, however long: the message names the file and the field
        err_console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        return 2
    except CourseEnvError as err:  # a course environment that cannot be built: what to run or fix
        err_console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


class _CommandsFormatter(argparse.HelpFormatter):
    """Aligns the commands' help: argparse leaves the subcommands' indent out of the width it
    computes, so a long command name pushes its help to the next line."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def add_argument(self, action) -> None:
        super().add_argument(action)
        if action.help is not argparse.SUPPRESS:
            for sub in self._iter_indented_subactions(action):
                width = len(self._format_action_invocation(sub)) + self._current_indent
                self._action_max_length = max(self._action_max_length, width)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmgrade",
        formatter_class=_CommandsFormatter,
        description="Grade language-model course assignments against a reference solution.",
        epilog=f"Assignments here: {', '.join(list_assignments()) or 'none'}. Docs: docs/engine.md.",
    )
    parser.add_argument("--version", action="version", version=f"lmgrade {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("grade", help="grade one submission folder and print the score table")
    p.add_argument("assignment", help="assignment id, e.g. cmu_11667_a2")
    p.add_argument("submission", type=Path, help="folder with the files the handout names")
    p.add_argument("--results", type=Path, help="write Gradescope's results.json here")
    p.add_argument("--json", action="store_true", help="print results.json to stdout instead of a table")
    p.add_argument("--timeout", type=float, help="per-test timeout in seconds (default: the rubric's)")
    p.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        default=None,
        help="wall-clock limit for the whole run; tests not finished by then score 0 (default 1800; 0: none)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show every test, passed ones too")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("record", help="record snapshots from the reference (and its variants)")
    p.add_argument("assignment")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("template", help="generate student_template/<id> from the reference's solution markers")
    p.add_argument("assignment", nargs="?", help="assignment id (default: all)")
    p.add_argument("--check", action="store_true", help="only check that the checked-in template is in sync")
    p.set_defaults(func=cmd_template)

    p = sub.add_parser(
        "check-suite",
        help="find a suite's authoring mistakes: rubric, snapshots, rules, template, mutants",
        description="One line per problem: tests missing from the rubric or rubric lines naming no test; "
        "snapshot keys sent but not recorded, recorded but not sent, tolerances/masks/hints/rules "
        "that differ from the test code (the reference is recorded afresh into a temporary "
        "folder to compare); unknown forbidden names; a stale template; too few mutants. "
        "A clean recording is kept in .lmgrade/check-suite, keyed by the content of every input "
        "(rubric, reference, suite, lock, snapshots, fixtures, the engine's source), so an unchanged "
        "suite is not recorded twice; --fresh (or LMGRADE_CHECK_CACHE=0) records anyway. "
        "Exit 1 if anything is found.",
    )
    p.add_argument("assignment", nargs="?", help="assignment id (default: all)")
    p.add_argument("--mutants", action="store_true", help="also grade every mutant: each must lose points")
    p.add_argument("--no-record", action="store_true", help="skip the fresh recording (faster, checks less)")
    p.add_argument("--fresh", action="store_true", help="record even if these exact inputs were recorded clean before")
    p.set_defaults(func=cmd_check_suite)

    p = sub.add_parser("mutants", help="grade every mutant; exit 1 if one keeps full marks")
    p.add_argument("assignment")
    p.add_argument("names", nargs="*", help="only these mutants")
    p.add_argument("--json", type=Path, dest="json_path", help="write [{name, score, max_score}] here")
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2, help="submissions graded at once")
    p.set_defaults(func=cmd_mutants)

    p = sub.add_parser("demo", help="grade the reference, the template and a few mutants of every assignment")
    p.add_argument("assignments", nargs="*", help="only these assignments")
    p.add_argument("-o", "--out", type=Path, default=Path("demo-out"), help="folder for results and artefacts")
    p.add_argument("--mutants", type=int, default=3, help="mutants per assignment (default 3)")
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("list", help="list the assignments and their points")
    p.set_defaults(func=cmd_list)

    _add_optional_parsers(sub)
    return parser


def _declared_commands() -> list[str]:
    """Modules the assignments' rubrics declare as adding verbs (``tools: {commands: [...]}``)."""
    out: list[str] = []
    for aid in list_assignments():
        try:
            out += load_assignment(aid, check_lock=False).tools.get("commands", ())
        except Exception:
            continue
    return list(dict.fromkeys(out))


def _add_optional_parsers(sub) -> None:
    """Verbs that live in their own modules register themselves: each module's
    ``add_parsers(subparsers)`` adds its commands (with ``func`` defaults)."""
    import importlib

    for name in ("grader.build", "grader.batch", "grader.cli_env", *_declared_commands()):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):
                continue  # that part is not installed here
            raise
        module.add_parsers(sub)


# -- grade ------------------------------------------------------------------------------------


def cmd_grade(args) -> int:
    from grader.results import build_results
    from grader.runner import grade

    assignment = load_assignment(args.assignment)
    with tempfile.TemporaryDirectory(prefix="lmgrade-zip-") as tmp:
        folder, problem = submission_folder(args.submission, Path(tmp))
        if problem:
            err_console.print(f"[red]error:[/red] {problem}")
            return 2
        with console.status(f"grading {args.submission} ({len(assignment.tests)} tests)...", spinner="dots"):
            report = grade(
                assignment,
                folder,
                results_path=args.results,
                timeout=args.timeout,
                budget=args.time_budget,
                label=str(args.submission),
            )
    if args.json:
        print(json.dumps(build_results(report), indent=2))  # noqa: T201
        return 0
    print_report(report, verbose=args.verbose)
    if args.results:
        console.print(f"results.json written to {args.results}")
    return 0


def submission_folder(path: Path, tmp: Path) -> tuple[Path, str]:
    """The folder to grade: ``path`` itself, or a zip extracted into ``tmp`` (as batch takes
    them); the problem in one line otherwise."""
    import zipfile

    if path.is_dir():
        return path, ""
    if not path.exists():
        return path, f"{path} does not exist"
    if not zipfile.is_zipfile(path):
        return path, f"{path} is a file, not a folder (give the folder holding your files, or a .zip of it)"
    from grader.batch import BatchError, check_zip

    try:
        with zipfile.ZipFile(path) as zf:
            check_zip(zf, path)
            zf.extractall(tmp / "submission")
    except (zipfile.BadZipFile, OSError, BatchError) as err:
        return path, f"cannot extract {path}: {err}"
    root = tmp / "submission"
    entries = [p for p in root.iterdir() if p.name != "__MACOSX"]
    return (entries[0] if len(entries) == 1 and entries[0].is_dir() else root), ""


def print_report(report, verbose: bool = False) -> None:
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    table = Table(title=f"{report.assignment.id}: {report.submission}", show_lines=False)
    table.add_column("Q")
    table.add_column("test")
    table.add_column("status")
    table.add_column("points", justify="right")
    table.add_column("message", overflow="fold", max_width=90)
    for t in report.tests:
        if t.passed and not verbose:
            continue
        style = STATUS_STYLE.get(t.outcome, "white")
        table.add_row(
            t.question,
            t.test_id,
            f"[{style}]{t.outcome}[/{style}]",
            f"{t.score:g}/{t.max_score:g}",
            t.message.splitlines()[0][:300] if t.message else "",
        )
    if table.row_count:
        console.print(table)
    summary = Table(title="score by question")
    summary.add_column("Q")
    summary.add_column("name")
    summary.add_column("points", justify="right")
    for q in report.assignment.questions:
        got = sum(t.score for t in report.tests if t.question == q.number)
        summary.add_row(q.number, q.name, f"{got:g}/{q.points:g}")
    console.print(summary)
    passed = sum(t.passed for t in report.tests)
    console.print(
        f"[bold]Score: {report.score:g} / {report.max_score:g}[/bold] "
        f"({passed} of {len(report.tests)} tests passed, {report.execution_time:.1f} s)"
    )


# -- record / template ------------------------------------------------------------------------


def cmd_record(args) -> int:
    from grader.record import RecordError, record

    assignment = load_assignment(args.assignment)
    with console.status(f"recording snapshots for {assignment.id}...", spinner="dots"):
        try:
            variants = record(assignment)
        except RecordError as err:
            err_console.print(f"[red]error:[/red] {err}")
            return 1
    console.print(f"recorded {assignment.id} ({', '.join(variants)}) into {assignment.snapshots_dir}")
    return 0


def cmd_check_suite(args) -> int:
    from grader.checksuite import check_suite

    if args.fresh:
        os.environ["LMGRADE_CHECK_CACHE"] = "0"
    status = 0
    for aid in [args.assignment] if args.assignment else list_assignments():
        with console.status(f"{aid}: checking the suite..."):
            problems = check_suite(load_assignment(aid), record=not args.no_record, mutants=args.mutants)
        for p in problems:
            err_console.print(f"[red]{aid}:[/red] {p}", highlight=False, soft_wrap=True)
        if problems:
            status = 1
        else:
            console.print(f"{aid}: suite consistent")
    return status


def cmd_template(args) -> int:
    from grader.template import check_template, write_template

    ids = [args.assignment] if args.assignment else list_assignments()
    status = 0
    for aid in ids:
        assignment = load_assignment(aid)
        if args.check:
            problems = check_template(assignment)
            for p in problems:
                err_console.print(f"[red]{aid}:[/red] {p}")
            if problems:
                err_console.print(f"run `lmgrade template {aid}` to regenerate")
                status = 1
            else:
                console.print(f"{aid}: template in sync")
        else:
            files = write_template(assignment)
            console.print(f"{aid}: wrote {len(files)} files to {assignment.template_dir}")
    return status


# -- mutants / demo ---------------------------------------------------------------------------


def cmd_mutants(args) -> int:
    from grader.mutants import grade_mutants
    from grader.results import write_json_atomic

    assignment = load_assignment(args.assignment)
    with console.status(f"grading mutants of {assignment.id}...", spinner="dots"):
        results = grade_mutants(assignment, args.names or None, jobs=args.jobs)
    if not results:
        err_console.print(f"[red]error:[/red] no mutants in {assignment.mutants_file}")
        return 2
    table = Table(title=f"mutants of {assignment.id}")
    for col in ("mutant", "score", "verdict", "bug"):
        table.add_column(col, overflow="fold")
    for r in results:
        verdict = "[green]caught[/green]" if r.killed else "[red]KEEPS FULL MARKS[/red]"
        table.add_row(r.name, f"{r.score:g}/{r.max_score:g}", verdict, r.description)
    console.print(table)
    if args.json_path:
        write_json_atomic([r.as_json() for r in results], args.json_path)
    survivors = [r.name for r in results if not r.killed]
    if survivors:
        err_console.print(f"[red]{len(survivors)} mutant(s) keep full marks:[/red] {', '.join(survivors)}")
        return 1
    console.print(f"all {len(results)} mutants lose points")
    return 0


def cmd_demo(args) -> int:
    from grader.demo import run_demo

    return run_demo(
        args.assignments or list_assignments(), args.out, n_mutants=args.mutants, jobs=args.jobs, console=console
    )


def cmd_list(args) -> int:
    from grader.snapshots import parent_decided_points

    table = Table(title=f"assignments in {project_root()}")
    for col in ("id", "title", "points", "tests", "parent-decided"):
        table.add_column(col)
    for aid in list_assignments():
        a = load_assignment(aid)
        checked = parent_decided_points(a)
        share = f"{checked:g} ({100 * checked / a.total_points:.0f}%)" if a.total_points else "-"
        table.add_row(aid, a.title, f"{a.total_points:g}", str(len(a.tests)), share)
    console.print(table)
    console.print(
        "parent-decided: points of tests the grading parent judges itself, from values it compares "
        "or rules it applies to what the test sent; the rest are listed as child_judged in the "
        "rubric (docs/security.md)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
