"""A submission is a folder: stage it for grading, then import its modules by name.

Staging copies into a fresh folder only what the rubric names (module files under any accepted
name, the provided files), fills the provided files the student did not send from the
template, applies overlays (a mutant or an accepted variant over the reference), and turns
notebooks into modules. Nothing else from the submission is copied, so a submitted
``conftest.py``, ``sitecustomize.py``, ``.pth`` file or ``torch.py`` never reaches the grader.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import random
import shutil
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from grader.assignment import Assignment

# Names a submission may not shadow: the grader's own stack and the libraries it trusts.
RESERVED_MODULES = frozenset({
    "grader", "tools", "pytest", "_pytest", "pluggy", "torch", "numpy", "safetensors", "yaml",
    "conftest", "sitecustomize", "usercustomize", "gradescope_utils", "transformers", "peft",
})
MAX_SEARCH_DEPTH = 4


class SubmissionError(Exception):
    """Something about the submission itself; the message is written for the student."""


@dataclass
class StagedSubmission:
    path: Path
    found: dict[str, str] = field(default_factory=dict)  # alias -> file name (as staged)
    errors: dict[str, str] = field(default_factory=dict)  # alias -> why it cannot be imported
    notes: list[str] = field(default_factory=list)  # what staging found, for the student

    STATE_FILE = ".lmgrade-staged.json"

    def save(self) -> None:
        data = {"found": self.found, "errors": self.errors, "notes": self.notes}
        (self.path / self.STATE_FILE).write_text(json.dumps(data), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> StagedSubmission:
        state_file = path / cls.STATE_FILE
        if not state_file.is_file():
            raise SubmissionError(f"{path} was not staged by lmgrade (no {cls.STATE_FILE})")
        data = json.loads(state_file.read_text(encoding="utf-8"))
        return cls(path=path, found=data["found"], errors=data["errors"], notes=[])


def stage(assignment: Assignment, source: Path | None, dest: Path, *, base: Path | None = None,
          overlays: tuple[Path, ...] = ()) -> StagedSubmission:
    """Build the folder the suite imports from.

    ``base`` (the reference, for mutants and variants) is copied first; otherwise the provided
    files come from the template. Then the submission's own files, then each overlay.
    """
    dest.mkdir(parents=True, exist_ok=True)
    staged = StagedSubmission(path=dest)
    start = base if base is not None else assignment.template_dir
    if start.is_dir():
        _copy_listed(assignment, start, dest, include_modules=base is not None, notes=None)
    if source is not None:
        if not source.is_dir():
            raise SubmissionError(f"submission folder {source} does not exist")
        _drop_replaced_modules(assignment, source, dest, search=True)
        _copy_listed(assignment, source, dest, include_modules=True, notes=staged.notes)
        ignored = hook_files(source)
        if ignored:
            staged.notes.append(f"ignored {', '.join(ignored[:8])}{' ...' if len(ignored) > 8 else ''}: a submission's "
                                "pytest configuration, start-up hooks and modules named like the grader's "
                                "libraries are never used")
    for overlay in overlays:
        _drop_replaced_modules(assignment, overlay, dest, search=False)
        _copy_listed(assignment, overlay, dest, include_modules=True, notes=None)
    _resolve_modules(assignment, staged)
    staged.save()
    return staged


def _copy_listed(assignment: Assignment, src: Path, dest: Path, *, include_modules: bool, notes: list[str] | None) -> None:
    names: list[str] = list(assignment.provided)
    if include_modules:
        names += [n for names_ in assignment.modules.values() for n in names_]
    for name in dict.fromkeys(names):
        found = _find(src, name) if notes is not None else (src / name if (src / name).exists() else None)
        if found is None:
            continue
        if notes is not None and found.parent != src and not (src / name).exists():
            notes.append(f"found {name} in {found.parent.relative_to(src).as_posix()}/ and used it")
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if found.is_dir():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(found, target, symlinks=False, ignore=_ignore_unsafe)
        elif found.is_file() and not found.is_symlink():
            shutil.copyfile(found, target)
        elif notes is not None:
            notes.append(f"ignored {name}: not a regular file")


def _drop_replaced_modules(assignment: Assignment, src: Path, dest: Path, *, search: bool) -> None:
    """A module given under any accepted name replaces the base's file under every name
    (a mutant's LabRNN.ipynb must not lose to the reference's LabRNN.py)."""
    for names in assignment.modules.values():
        given = any((_find(src, n) if search else (src / n if (src / n).is_file() else None)) for n in names)
        if given:
            for n in names:
                (dest / n).unlink(missing_ok=True)


HOOK_FILES = frozenset({"conftest.py", "pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml",
                        "sitecustomize.py", "usercustomize.py"})


def hook_files(src: Path) -> list[str]:
    """Files in a submission that would configure pytest, hook Python's start-up or shadow a
    library if they were used (they never are: staging copies only the rubric's files)."""
    found = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if len(rel.parts) > MAX_SEARCH_DEPTH or "__MACOSX" in rel.parts:
            continue
        name = path.name
        shadows = (path.suffix == ".py" or path.is_dir()) and path.stem in RESERVED_MODULES - {"conftest", "sitecustomize", "usercustomize"}
        if name in HOOK_FILES or name.endswith(".pth") or shadows:
            found.append(rel.as_posix())
    return found


def _ignore_unsafe(folder: str, entries: list[str]) -> list[str]:
    """Inside provided folders: no symlinks, caches, or files that hook Python at start-up."""
    out = []
    for e in entries:
        p = Path(folder) / e
        if p.is_symlink() or e == "__pycache__" or e.endswith(".pth") or e in ("conftest.py", "sitecustomize.py"):
            out.append(e)
    return out


def _find(src: Path, name: str) -> Path | None:
    """``name`` at the top of the submission, else the shallowest match below it."""
    direct = src / name
    if direct.exists() and not direct.is_symlink():
        return direct
    leaf = Path(name).name
    best = None
    for path in src.rglob(leaf):
        rel = path.relative_to(src)
        if len(rel.parts) > MAX_SEARCH_DEPTH or path.is_symlink() or "__MACOSX" in rel.parts:
            continue
        if not rel.as_posix().endswith(name):
            continue
        if best is None or len(rel.parts) < len(best.relative_to(src).parts):
            best = path
    return best


def _resolve_modules(assignment: Assignment, staged: StagedSubmission) -> None:
    for alias, names in assignment.modules.items():
        present = [n for n in names if (staged.path / n).is_file()]
        if not present:
            staged.errors[alias] = f"the submission has no {' or '.join(names)}"
            continue
        chosen = present[0]
        if chosen.endswith(".ipynb"):
            chosen = _notebook_to_module(staged, alias, chosen)
            if chosen is None:
                continue
        stem = Path(chosen).stem
        if stem in RESERVED_MODULES:
            staged.errors[alias] = f"{chosen} would shadow the library module {stem!r}; rename it"
            continue
        staged.found[alias] = chosen
        if chosen != names[0] and not names[0].endswith(".ipynb"):
            staged.notes.append(f"used {chosen} (also accepted: {', '.join(n for n in names if n != chosen)})")


def _notebook_to_module(staged: StagedSubmission, alias: str, name: str) -> str | None:
    from grader.notebook import NotebookError, extract_notebook

    target = staged.path / (Path(name).stem + ".py")
    try:
        extract = extract_notebook(staged.path / name)
    except NotebookError as err:
        staged.errors[alias] = str(err)
        return None
    if target.exists():
        staged.notes.append(f"both {target.name} and {name} were given: graded {name}")
    target.write_text(extract.source, encoding="utf-8")
    staged.notes.append(extract.report())
    return target.name


# -- import side (runs in the process that executes the suite) ----------------------------

class Modules:
    """``sub``: attribute access imports the submission's module for that alias."""

    def __init__(self, staged: StagedSubmission, fixtures: Path):
        self._staged = staged
        self._loaded: dict[str, ModuleProxy] = {}
        self._failed: dict[str, str] = dict(staged.errors)
        self.path = staged.path
        self.fixtures = fixtures

    def __getattr__(self, alias: str) -> ModuleProxy:
        if alias.startswith("_"):
            raise AttributeError(alias)
        if alias in self._loaded:
            return self._loaded[alias]
        if alias in self._failed:
            raise SubmissionError(self._failed[alias])
        if alias not in self._staged.found:
            raise SubmissionError(f"the test asked for module {alias!r}, which the rubric does not name")
        file = self._staged.found[alias]
        try:
            module = _import_preserving_rng(Path(file).stem, self.path)
        except SubmissionError as err:
            self._failed[alias] = str(err)
            raise
        self._loaded[alias] = ModuleProxy(module, file)
        return self._loaded[alias]


class ModuleProxy:
    """A student module whose missing names fail with a message naming the file."""

    def __init__(self, module: ModuleType, file: str):
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_file", file)

    def __getattr__(self, name: str):
        try:
            return getattr(self._module, name)
        except AttributeError:
            raise SubmissionError(f"{self._file} does not define `{name}`") from None

    def __setattr__(self, name: str, value) -> None:
        setattr(self._module, name, value)


def _import_preserving_rng(module_name: str, folder: Path) -> ModuleType:
    """Import a student module without letting import-time randomness shift the test's inputs."""
    import numpy as np
    import torch

    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    try:
        if module_name in sys.modules:
            return sys.modules[module_name]
        return importlib.import_module(module_name)
    except SyntaxError as err:
        raise SubmissionError(f"{Path(err.filename or module_name).name}: SyntaxError at line {err.lineno}: {err.msg}") from None
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        if (folder / f"{missing}.py").exists() or missing == module_name:
            raise SubmissionError(f"importing {module_name}.py failed: {err}") from None
        raise SubmissionError(
            f"{module_name}.py imports `{missing}`, which this course's grading environment does not provide"
        ) from None
    except BaseException as err:  # noqa: BLE001 - student import code may raise anything, even SystemExit
        where = _student_frame(err, folder)
        raise SubmissionError(f"importing {module_name}.py raised {type(err).__name__}: {err}{where}") from None
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


def _student_frame(err: BaseException, folder: Path) -> str:
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve().is_relative_to(folder.resolve())]
    if not frames:
        return ""
    f = frames[-1]
    return f" ({Path(f.filename).name}, line {f.lineno})"


def module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None
