"""Mutants and variants: named edits of the reference, applied when they are graded or recorded.

A **mutant** is a known-buggy submission; ``tests/mutants/<id>.yaml`` lists them, and each must
lose points (``lmgrade mutants <id>``: a suite that lets one keep full marks has a hole). A
**variant** is an accepted alternative design; ``reference/<id>/variants.yaml`` lists them and
the rubric's ``variants:`` names those ``lmgrade record`` records snapshots for.

Both files hold a list of entries in the same format::

    - name: no_sqrt_scaling                 # unique in the file
      why: Attention scores are not divided by sqrt(d_head).   # one line: the bug / the design
      file: model.py                        # relative to reference/<id>/
      old: "scores = q @ k.transpose(-2, -1) / math.sqrt(d_head)"
      new: "scores = q @ k.transpose(-2, -1)"

    - name: two_places                      # several hunks: a list of {file, old, new}
      why: ...
      edits:
        - {file: model.py, old: ..., new: ...}
        - {file: train.py, old: ..., new: ...}

Hunks apply in order; each ``old`` must occur exactly once in its file as the previous hunks
left it, or the entry fails with an error naming it, the file and the text. A notebook
(``.ipynb``) is edited as its percent-format text (``grader.notebook.notebook_to_py``) and
written back as a notebook, so a notebook mutant is graded as a notebook hand-in.

``materialise`` writes the edited files into a folder, which is graded as an overlay of the
reference (``grade(..., base=reference, overlays=(folder,))``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from grader.assignment import Assignment, RubricError
from grader.report import GradeReport
from grader.runner import grade

ENTRY_KEYS = frozenset({"name", "why", "file", "old", "new", "edits"})
EDIT_KEYS = frozenset({"file", "old", "new"})
SHOWN = 80  # characters of an `old` text quoted in an error


class EditError(RubricError):
    """An edits file that cannot be used or applied; the message names the entry, the file and
    the text, and says which file to update."""


@dataclass(frozen=True)
class Edit:
    """One hunk: replace ``old`` (exactly once in ``file``) by ``new``."""

    file: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutation:
    """A mutant or a variant: named edits of the reference."""

    kind: str  # "mutant" or "variant"
    name: str
    why: str
    edits: tuple[Edit, ...]
    source: Path  # the edits file, named in every error
    root: Path | None = None  # paths in errors are shown relative to it

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.file for e in self.edits))

    def error(self, message: str) -> EditError:
        return EditError(f"{self.kind} `{self.name}`: {message}: update {_shown_path(self.source, self.root)}")


# -- loading --------------------------------------------------------------------------------------


def load_edits(path: Path, kind: str, root: Path | None = None) -> list[Mutation]:
    """The entries of an edits file, checked for shape (not yet against the reference).

    ``root`` (the project) only shortens the paths in error messages."""
    shown = _shown_path(path, root)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise EditError(f"{shown}: not valid YAML: {err}") from err
    if data is None:
        return []
    if not isinstance(data, list):
        raise EditError(f"{shown}: must be a list of {kind}s (- name: ...)")
    out: list[Mutation] = []
    seen: set[str] = set()
    for index, entry in enumerate(data):
        where = f"{shown}: {kind} #{index + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise EditError(f"{where}: each {kind} is a mapping with a `name`")
        name = entry["name"]
        where = f"{shown}: {kind} `{name}`"
        if name in seen:
            raise EditError(f"{where}: the name is used twice")
        seen.add(name)
        unknown = set(entry) - ENTRY_KEYS
        if unknown:
            raise EditError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        why = entry.get("why")
        if not isinstance(why, str) or not why.strip() or "\n" in why.strip():
            raise EditError(f"{where}: `why` must be one line saying what the {kind} is")
        if "edits" in entry:
            if EDIT_KEYS & set(entry):
                raise EditError(f"{where}: give either `file`/`old`/`new` or `edits`, not both")
            hunks = entry["edits"]
            if not isinstance(hunks, list) or not hunks:
                raise EditError(f"{where}: `edits` must be a non-empty list of {{file, old, new}}")
        else:
            hunks = [{k: entry[k] for k in EDIT_KEYS if k in entry}]
        edits = tuple(_parse_edit(h, where) for h in hunks)
        out.append(Mutation(kind=kind, name=name, why=why.strip(), edits=edits, source=path, root=root))
    return out


def _parse_edit(hunk, where: str) -> Edit:
    if not isinstance(hunk, dict) or set(hunk) != EDIT_KEYS:
        got = sorted(hunk) if isinstance(hunk, dict) else type(hunk).__name__
        raise EditError(f"{where}: each edit needs exactly `file`, `old` and `new` (got {got})")
    if not all(isinstance(hunk[k], str) for k in EDIT_KEYS):
        raise EditError(
            f'{where}: `file`, `old` and `new` must be strings (quote numbers and write an empty `new` as "")'
        )
    if not hunk["old"]:
        raise EditError(f"{where}: `old` is empty in {hunk['file']}: quote the text to replace")
    file = hunk["file"]
    if Path(file).is_absolute() or ".." in Path(file).parts:
        raise EditError(f"{where}: `file` must be relative to the reference folder (got {file!r})")
    return Edit(file=file, old=hunk["old"], new=hunk["new"])


def list_mutants(assignment: Assignment) -> list[Mutation]:
    """The mutants of an assignment in file order (none if it has no mutants file)."""
    path = assignment.mutants_file
    return load_edits(path, "mutant", assignment.root) if path.is_file() else []


def list_alternatives(assignment: Assignment) -> list[Mutation]:
    """Correct solutions written another way the handout allows (``tests/alternatives/<id>.yaml``):
    each must get full marks."""
    path = assignment.alternatives_file
    return load_edits(path, "alternative", assignment.root) if path.is_file() else []


def load_variants(assignment: Assignment) -> dict[str, Mutation]:
    """The variants the rubric names, from ``reference/<id>/variants.yaml``."""
    if not assignment.variants:
        return {}
    path = assignment.variants_file
    shown = _shown_path(path, assignment.root)
    if not path.is_file():
        named = ", ".join(assignment.variants)
        raise EditError(f"{assignment.id}: the rubric names variants {named} but {shown} does not exist")
    defined = {v.name: v for v in load_edits(path, "variant", assignment.root)}
    missing = [n for n in assignment.variants if n not in defined]
    if missing:
        raise EditError(
            f"{assignment.id}: the rubric names variant(s) {', '.join(missing)}, which {shown} "
            f"does not define (it has: {', '.join(defined) or 'none'})"
        )
    return {n: defined[n] for n in assignment.variants}


# -- applying -------------------------------------------------------------------------------------


def edited_files(mutation: Mutation, base: Path) -> dict[str, str]:
    """The text of every file the edits touch, edited: relative path -> text."""
    texts: dict[str, str] = {}
    for edit in mutation.edits:
        if edit.file not in texts:
            path = base / edit.file
            if not path.is_file():
                raise mutation.error(f"{edit.file} does not exist in {_shown_path(base, mutation.root)}")
            texts[edit.file] = _read(path)
        text = texts[edit.file]
        count = text.count(edit.old)
        if count == 0:
            raise mutation.error(f"{edit.file} no longer contains {_quote(edit.old)}")
        if count > 1:
            raise mutation.error(
                f"{edit.file} contains {_quote(edit.old)} {count} times (must be once): make `old` longer"
            )
        texts[edit.file] = text.replace(edit.old, edit.new, 1)
    return texts


def materialise(mutation: Mutation, base: Path, dest: Path, assignment: Assignment | None = None) -> Path:
    """Write the edited copies of the reference files into ``dest`` (an overlay folder).

    With ``assignment``, a file staging would not take from an overlay (not a module or
    provided file) is an error, and an edited file inside a provided folder brings the rest of
    that folder along (staging replaces a provided folder whole)."""
    texts = edited_files(mutation, base)
    dest.mkdir(parents=True, exist_ok=True)
    for rel, text in texts.items():
        if assignment is not None:
            unit = _staged_unit(assignment, rel)
            if unit is None:
                raise mutation.error(
                    f"{rel} is neither a module nor a provided file of "
                    f"{assignment.id}, so staging would ignore the edit"
                )
            if unit != rel and not (dest / unit).exists():
                shutil.copytree(base / unit, dest / unit, ignore=shutil.ignore_patterns("__pycache__"))
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        _write(target, text)
    return dest


@contextmanager
def materialised(assignment: Assignment, mutation: Mutation) -> Iterator[Path]:
    """A temporary overlay folder holding the mutation applied to the reference."""
    with tempfile.TemporaryDirectory(prefix=f"lmgrade-{mutation.kind}-") as tmp:
        yield materialise(mutation, assignment.reference_dir, Path(tmp) / mutation.name, assignment)


def check(assignment: Assignment, mutations: list[Mutation]) -> None:
    """Apply every mutation in memory: the first stale or ambiguous edit raises."""
    for m in mutations:
        for rel in edited_files(m, assignment.reference_dir):
            if _staged_unit(assignment, rel) is None:
                raise m.error(
                    f"{rel} is neither a module nor a provided file of {assignment.id}, "
                    "so staging would ignore the edit"
                )


def _staged_unit(assignment: Assignment, rel: str) -> str | None:
    """What staging copies from an overlay to bring ``rel`` in: the file itself, or the
    provided folder holding it; None if staging ignores it."""
    names = [n for names in assignment.modules.values() for n in names] + list(assignment.provided)
    if rel in names:
        return rel
    for name in assignment.provided:
        if rel.startswith(name.rstrip("/") + "/"):
            return name.rstrip("/")
    return None


def _read(path: Path) -> str:
    if path.suffix == ".ipynb":
        import nbformat

        from grader.notebook import notebook_to_py

        return notebook_to_py(nbformat.read(path, as_version=4))
    return path.read_text(encoding="utf-8")


def _write(path: Path, text: str) -> None:
    if path.suffix == ".ipynb":
        import nbformat

        from grader.notebook import py_to_notebook

        path.write_text(nbformat.writes(py_to_notebook(text)) + "\n", encoding="utf-8")
    else:
        path.write_text(text, encoding="utf-8")


def _quote(text: str) -> str:
    shown = text if len(text) <= SHOWN else text[:SHOWN] + "..."
    return repr(shown)


def _shown_path(path: Path, root: Path | None) -> str:
    """``path`` relative to the project when it lies in it (shorter errors), else as it is."""
    if root is not None:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


# -- grading --------------------------------------------------------------------------------------


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
        return {
            "name": self.name,
            "score": self.score,
            "max_score": self.max_score,
            "description": self.description,
            "killed": self.killed,
        }


def grade_mutant(assignment: Assignment, mutant: Mutation, **kwargs) -> MutantResult:
    """Grade the reference with the mutant's edits applied (``kwargs`` go to ``grade``)."""
    kwargs.setdefault("label", f"mutant {mutant.name}")
    kwargs.setdefault("warm", True)
    with materialised(assignment, mutant) as overlay:
        report = grade(assignment, None, base=assignment.reference_dir, overlays=(overlay,), **kwargs)
    return MutantResult(mutant.name, mutant.why, report.score, report.max_score, report)


def grade_mutants(
    assignment: Assignment, names: list[str] | None = None, jobs: int = 2, progress=None, **kwargs
) -> list[MutantResult]:
    mutants = list_mutants(assignment)
    if names:
        unknown = sorted(set(names) - {m.name for m in mutants})
        if unknown:
            raise EditError(
                f"{assignment.id} has no mutant named {', '.join(unknown)} "
                f"(see {_shown_path(assignment.mutants_file, assignment.root)})"
            )
        mutants = [m for m in mutants if m.name in names]
    check(assignment, mutants)  # a stale edit fails before anything is graded
    results: list[MutantResult] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for result in pool.map(lambda m: grade_mutant(assignment, m, **kwargs), mutants):
            results.append(result)
            if progress:
                progress(result)
    return results
