"""Generate the student template from the reference's solution markers.

``# BEGIN SOLUTION`` ... ``# END SOLUTION`` regions become ``raise NotImplementedError`` at the
region's indentation (or the text after ``BEGIN SOLUTION:``); a line ending in ``# SOLUTION``
is dropped. Files the rubric lists as notebooks are generated from their ``.py`` source after
stripping. The checked-in template is compared with a fresh generation by ``--check``.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from grader.assignment import Assignment

BEGIN = re.compile(r"^(?P<indent>[ \t]*)#\s*BEGIN SOLUTION(?::\s*(?P<replacement>.*\S))?\s*$")
END = re.compile(r"^[ \t]*#\s*END SOLUTION\s*$")
LINE = re.compile(r"#\s*SOLUTION\s*$")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".yaml", ".yml", ".json", ".jsonl", ".cfg", ".toml"}


class MarkerError(ValueError):
    """Unbalanced or nested solution markers; the message names the file and line."""


def strip_solutions(text: str, filename: str = "<string>") -> str:
    out: list[str] = []
    region: tuple[int, str, str | None] | None = None  # (start line, indent, replacement)
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if region is not None:
                raise MarkerError(f"{filename}:{lineno}: BEGIN SOLUTION inside the region opened at line {region[0]}")
            region = (lineno, begin.group("indent"), begin.group("replacement"))
            continue
        if end:
            if region is None:
                raise MarkerError(f"{filename}:{lineno}: END SOLUTION without BEGIN SOLUTION")
            _, indent, replacement = region
            out.append(f"{indent}{replacement or 'raise NotImplementedError'}\n")
            region = None
            continue
        if region is not None:
            continue
        if LINE.search(line):
            continue
        out.append(line)
    if region is not None:
        raise MarkerError(f"{filename}:{region[0]}: BEGIN SOLUTION never closed")
    return "".join(out)


def has_markers(text: str) -> bool:
    return any(BEGIN.match(line) for line in text.splitlines())


@dataclass(frozen=True)
class TemplateFile:
    relpath: str
    content: bytes


def generate(assignment: Assignment) -> list[TemplateFile]:
    """The template's files: every module file and provided file of the reference, stripped."""
    ref = assignment.reference_dir
    names = list(dict.fromkeys([n for names in assignment.modules.values() for n in names] + list(assignment.provided)))
    files: list[TemplateFile] = []
    for name in names:
        if name in assignment.notebooks:
            continue
        path = ref / name
        if path.is_dir():
            for sub in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
                files.append(_render(sub, sub.relative_to(ref).as_posix()))
        elif path.is_file():
            files.append(_render(path, name))
    for notebook, source in assignment.notebooks.items():
        import nbformat

        from grader.notebook import py_to_notebook

        text = strip_solutions((ref / source).read_text(encoding="utf-8"), source)
        nb = py_to_notebook(text)
        files.append(TemplateFile(notebook, nbformat.writes(nb).encode("utf-8") + b"\n"))
    return files


def _render(path: Path, relpath: str) -> TemplateFile:
    if path.suffix in TEXT_SUFFIXES:
        text = path.read_text(encoding="utf-8")
        return TemplateFile(relpath, strip_solutions(text, relpath).encode("utf-8"))
    return TemplateFile(relpath, path.read_bytes())


def write_template(assignment: Assignment) -> list[str]:
    out = assignment.template_dir
    if out.exists():
        shutil.rmtree(out)
    written = []
    for f in generate(assignment):
        target = out / f.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.content)
        written.append(f.relpath)
    return written


def check_template(assignment: Assignment) -> list[str]:
    """Differences between the checked-in template and a fresh generation (empty if in sync)."""
    out = assignment.template_dir
    problems = []
    expected = {f.relpath: f.content for f in generate(assignment)}
    actual = (
        {
            p.relative_to(out).as_posix(): p.read_bytes()
            for p in out.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        if out.is_dir()
        else {}
    )
    for rel in sorted(expected.keys() - actual.keys()):
        problems.append(f"missing from the template: {rel}")
    for rel in sorted(actual.keys() - expected.keys()):
        problems.append(f"in the template but not generated: {rel}")
    for rel in sorted(expected.keys() & actual.keys()):
        if expected[rel] != actual[rel]:
            problems.append(f"out of date: {rel}")
    return problems


_RAISE = re.compile(r"raise NotImplementedError(\([^\n]*\))?")


def starter_style(template: Path, out: Path, body: str) -> Path:
    """A copy of the template with every ``raise NotImplementedError(...)`` replaced by ``body``
    (``return ...`` or ``pass``), as real starters write their placeholders: what a student who
    has written nothing hands in. Every graded test must fail on it."""
    shutil.copytree(template, out)
    for path in out.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if _RAISE.search(text):
            path.write_text(_RAISE.sub(body, text), encoding="utf-8")
    out.chmod(0o755)
    return out
