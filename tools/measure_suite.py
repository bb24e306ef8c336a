"""Measure a suite: score and evidence_score of the reference, the template, starter-style
templates (each `raise NotImplementedError` replaced by `return ...`, then by `pass`), every
mutant and every correct alternative.

    .venv/bin/python -m tools.measure_suite ID [--only NAME ...] [--starter DIR] [--failures]

`--starter DIR` also grades a folder holding the course's real, unmodified starter (fetched for
measurement only, never copied into the project). The evidence score is what a run would score
had the test process said "passed" for every test: it must be 0 wherever the score must be.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from grader.assignment import load_assignment
from grader.mutants import grade_mutant, list_alternatives, list_mutants
from grader.runner import grade
from grader.template import starter_style


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("assignment")
    parser.add_argument("--only", nargs="*", default=None, help="substrings of case names to run")
    parser.add_argument("--starter", type=Path, default=None, help="a real starter folder to grade too")
    parser.add_argument("--failures", action="store_true", help="print the tests that lose points")
    args = parser.parse_args(argv)
    a = load_assignment(args.assignment)
    with tempfile.TemporaryDirectory(prefix="lmgrade-measure-") as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)
        cases = [
            ("reference", lambda: grade(a, a.reference_dir, warm=True)),
            ("template", lambda: grade(a, a.template_dir, warm=True)),
        ]
        for name, body in (("return", "return ..."), ("pass", "pass")):
            cases.append(
                (
                    f"starter-style {body}",
                    lambda n=name, b=body: grade(a, starter_style(a.template_dir, tmp_path / n, b), warm=True),
                )
            )
        if args.starter is not None:
            cases.append(("real starter", lambda: grade(a, args.starter, warm=True)))
        for kind, items in (("mutant", list_mutants(a)), ("alternative", list_alternatives(a))):
            cases += [(f"{kind} {m.name}", lambda m=m: grade_mutant(a, m).report) for m in items]
        for name, run in cases:
            if args.only and not any(s in name for s in args.only):
                continue
            report = run()
            print(
                f"{name:55s} score {report.score:6.2f}  evidence {report.evidence_score:6.2f}  / {report.max_score:g}",
                flush=True,
            )
            if args.failures:
                for t in report.tests:
                    if t.max_score and (t.score < t.max_score or t.evidence_score < t.max_score):
                        print(
                            f"    {t.test_id}: {t.score:g}/{t.max_score:g} evidence {t.evidence_score:g}"
                            f" {t.outcome}: {t.message[:160]}"
                        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
