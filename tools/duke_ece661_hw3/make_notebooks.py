"""Regenerate reference/duke_ece661_hw3/Lab*.ipynb from their percent-format .py sources.

    python -m tools.duke_ece661_hw3.make_notebooks [--check]

The rubric's `notebooks:` map says which notebook comes from which source; `lmgrade template`
does the same for the student template (after stripping the solution markers).
"""

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

from grader import project_root
from grader.notebook import py_to_notebook

ROOT = project_root()
ASSIGNMENT = "duke_ece661_hw3"


def notebook_sources() -> dict:
    rubric = yaml.safe_load((ROOT / "test_suites" / ASSIGNMENT / "assignment.yaml").read_text())
    return rubric["notebooks"]


def make_notebooks(folder: Path = ROOT / "reference" / ASSIGNMENT, check: bool = False) -> list:
    """Write (or, with check, compare) each notebook; returns the names that were out of date."""
    stale = []
    for notebook, source in notebook_sources().items():
        text = nbformat.writes(py_to_notebook((folder / source).read_text(encoding="utf-8")))
        target = folder / notebook
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            stale.append(notebook)
            if not check:
                target.write_text(text, encoding="utf-8")
    return stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a notebook is out of date")
    args = parser.parse_args()
    stale = make_notebooks(check=args.check)
    if args.check and stale:
        sys.exit(f"out of date: {', '.join(stale)}; run python -m tools.duke_ece661_hw3.make_notebooks")


if __name__ == "__main__":
    main()
