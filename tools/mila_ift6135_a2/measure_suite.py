"""Measure the suite: score and evidence_score of the reference, the template, starter-style
templates (each `raise NotImplementedError` replaced by `return ...`, then by `pass`), every
mutant and every correct alternative.

    .venv/bin/python -m tools.mila_ift6135_a2.measure_suite [--only NAME ...] [--starter DIR]

`--starter DIR` also grades a folder holding the course's real, unmodified starter (fetched for
measurement only, never copied into the project). The evidence score is what a run would score
had the test process said "passed" for every test: it must be 0 wherever the score must be.
"""
from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

from grader.assignment import load_assignment
from grader.runner import grade

ID = "mila_ift6135_a2"
ROOT = Path(__file__).resolve().parents[2]
RAISE = re.compile(r"raise NotImplementedError(\([^\n]*\))?")


def starter_style(template: Path, out: Path, body: str) -> Path:
    """A copy of the template with every `raise NotImplementedError(...)` replaced by `body`."""
    shutil.copytree(template, out)
    for path in out.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if RAISE.search(text):
            path.write_text(RAISE.sub(body, text), encoding="utf-8")
    out.chmod(0o755)
    return out


def cases(assignment, tmp: Path, starter: Path | None) -> list[tuple[str, dict]]:
    template = ROOT / "student_template" / ID
    out = [("reference", {"submission": assignment.reference_dir}),
           ("template", {"submission": template}),
           ("starter-style return ...", {"submission": starter_style(template, tmp / "ret", "return ...")}),
           ("starter-style pass", {"submission": starter_style(template, tmp / "pass", "pass")})]
    if starter is not None:
        out.append(("real starter", {"submission": starter}))
    for kind, folder in (("mutant", assignment.mutants_dir), ("alternative", ROOT / "tests" / "alternatives" / ID)):
        for path in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
            out.append((f"{kind} {path.name}", {"submission": None, "base": assignment.reference_dir,
                                                 "overlays": (path,)}))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="substrings of case names to run")
    parser.add_argument("--starter", type=Path, default=None)
    parser.add_argument("--failures", action="store_true", help="print the tests that lose points")
    args = parser.parse_args(argv)
    assignment = load_assignment(ID, ROOT)
    with tempfile.TemporaryDirectory(prefix="mila-measure-") as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)
        for name, spec in cases(assignment, tmp_path, args.starter):
            if args.only and not any(s in name for s in args.only):
                continue
            submission = spec.pop("submission")
            report = grade(assignment, submission, label=name, **spec)
            print(f"{name:55s} score {report.score:6.2f}  evidence {report.evidence_score:6.2f}"
                  f"  / {report.max_score:g}", flush=True)
            if args.failures:
                for t in report.tests:
                    if t.max_score and (t.score < t.max_score or t.evidence_score < t.max_score):
                        print(f"    {t.test_id}: {t.score:g}/{t.max_score:g} evidence {t.evidence_score:g}"
                              f" {t.outcome}: {t.message[:160]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
