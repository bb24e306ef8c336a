"""``lmgrade demo``: the main job on the bundled examples.

For each assignment: grade the reference, the template and a few mutants, write each
results.json, and print the scores side by side. Then run the TA tools' own demos where an
assignment ships one (learning curves, checkpoint checker).
"""

from __future__ import annotations

import importlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.table import Table

from grader.assignment import load_assignment
from grader.mutants import grade_mutant, list_mutants
from grader.runner import grade


def mutant_label(label: str) -> bool:
    return label.startswith("mutant ")


def run_demo(assignment_ids: list[str], out: Path, *, n_mutants: int, jobs: int, console) -> int:
    out.mkdir(parents=True, exist_ok=True)
    table = Table(title="lmgrade demo: autograded scores")
    # one line per submission in 120 columns: long names and notes are cut (results.json has them whole)
    for col, width in (("assignment", 15), ("submission", 32), ("score", 7), ("tests passed", 12), ("note", 34)):
        table.add_column(col, no_wrap=True, overflow="ellipsis", min_width=min(width, 15), max_width=width)
    status = 0
    for aid in assignment_ids:
        assignment = load_assignment(aid)
        subjects = [
            ("reference", assignment.reference_dir, None, ""),
            ("template", assignment.template_dir, None, "untouched student template"),
        ]
        for m in list_mutants(assignment)[:n_mutants]:
            subjects.append((f"mutant {m.name}", None, m, m.why))

        def run(subject, assignment=assignment, aid=aid):
            label, folder, mutant, _ = subject
            results = out / aid / f"{label.replace(' ', '_')}.results.json"
            if mutant is not None:
                return grade_mutant(assignment, mutant, results_path=results, label=label).report
            return grade(assignment, folder, results_path=results, label=label, warm=True)

        with (
            console.status(f"{aid}: grading {len(subjects)} submissions...", spinner="dots"),
            ThreadPoolExecutor(max_workers=max(1, jobs)) as pool,
        ):
            reports = list(pool.map(run, subjects))
        for (label, _, _, note), report in zip(subjects, reports):
            passed = sum(t.passed for t in report.tests)
            table.add_row(aid, label, f"{report.score:g}/{report.max_score:g}", f"{passed}/{len(report.tests)}", note)
            if label == "reference" and report.score < report.max_score:
                status = 1
            if label == "template" and report.score > 0:
                status = 1
            if mutant_label(label) and report.score >= report.max_score:  # a bug the suite missed
                status = 1
        table.add_section()
    console.print(table)
    console.print(f"results.json files under {out}/")
    for aid in assignment_ids:
        demo = load_assignment(aid).tools.get("demo")
        if demo:
            status |= _tool_demo(aid, demo, out / aid, console)
    return status


def _tool_demo(aid: str, entry: str, out: Path, console) -> int:
    """Run the demo the rubric declares (``tools: {demo: module:function}``):
    ``function(out_dir)`` returns a path it wrote or an exit code."""
    module_name, _, func_name = entry.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name or "run_demo")
    except (ImportError, AttributeError) as err:
        console.print(f"[yellow]{aid}: the demo {entry} cannot be loaded ({err})[/yellow]")
        return 1
    console.rule(f"{aid}: {module_name}")
    result = func(out)
    if isinstance(result, int):
        return result
    console.print(f"wrote {result}")
    return 0
