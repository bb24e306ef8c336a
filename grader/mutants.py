"""``lmgrade mutants``: grade every known-buggy submission of an assignment.

A mutant is a folder under ``tests/mutants/<id>/<name>/`` holding only the files it changes
(and a one-line ``MUTANT.md`` naming the bug); the rest comes from the reference. A suite that
lets a mutant keep full marks has a hole.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from grader.assignment import Assignment
from grader.report import GradeReport
from grader.runner import grade


@dataclass(frozen=True)
class MutantResult:
    name: str
    description: str
    score: float
    max_score: float
    report: GradeReport

    @property
    def killed(self) -> bool:
        return self.score < self.max_score

    def as_json(self) -> dict:
        return {"name": self.name, "score": self.score, "max_score": self.max_score,
                "description": self.description, "killed": self.killed}


def list_mutants(assignment: Assignment) -> list[Path]:
    root = assignment.mutants_dir
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))) if root.is_dir() else []


def describe(mutant: Path) -> str:
    note = mutant / "MUTANT.md"
    return note.read_text(encoding="utf-8").strip().splitlines()[0] if note.is_file() else ""


def grade_mutant(assignment: Assignment, mutant: Path) -> MutantResult:
    report = grade(assignment, None, base=assignment.reference_dir, overlays=(mutant,), label=f"mutant {mutant.name}",
                   warm=True)
    return MutantResult(mutant.name, describe(mutant), report.score, report.max_score, report)


def grade_mutants(assignment: Assignment, names: list[str] | None = None, jobs: int = 2, progress=None) -> list[MutantResult]:
    mutants = [m for m in list_mutants(assignment) if not names or m.name in names]
    results: list[MutantResult] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for result in pool.map(lambda m: grade_mutant(assignment, m), mutants):
            results.append(result)
            if progress:
                progress(result)
    return results
