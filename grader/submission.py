"""A submission is a folder: stage it for grading, then import its modules by name.

Staging copies into a fresh folder only what the rubric names (module files under any accepted
name, the provided files), fills the provided files the student did not send from the
template, applies overlays (a mutant or an accepted variant over the reference), and turns
notebooks into modules. Nothing else from the submission is copied, so a submitted
``conftest.py``, ``sitecustomize.py``, ``.pth`` file or ``torch.py`` never reaches the grader.

A module found in a subfolder is flattened to the staged root, unless the submission imports it
through that folder as a package (``from lm.model import DecoderLM``, or relative imports): then
the package (its ``.py`` files, recursively, without hook files, reserved names or symlinks) is
staged at the root under its own name and the rubric's alias imports it as ``lm.model``, so the
student's imports and the tests share one module object.

Staging never raises for what a submission contains: a file it cannot read, a notebook nested
too deeply to parse, any unexpected error becomes a note or that module's error. Only a
submission folder that does not exist raises ``SubmissionError``.
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
RESERVED_MODULES = frozenset(
    {
        "grader",
        "tools",
        "pytest",
        "_pytest",
        "pluggy",
        "torch",
        "numpy",
        "safetensors",
        "yaml",
        "conftest",
        "sitecustomize",
        "usercustomize",
        "gradescope_utils",
        "transformers",
        "peft",
    }
)
MAX_SEARCH_DEPTH = 4


class SubmissionError(Exception):
    """Something about the submission itself; the message is written for the student."""


@dataclass
class StagedSubmission:
    path: Path
    found: dict[str, str] = field(default_factory=dict)  # alias -> file (as staged, "lm/model.py")
    errors: dict[str, str] = field(default_factory=dict)  # alias -> why it cannot be imported
    notes: list[str] = field(default_factory=list)  # what staging found, for the student
    packages: dict[str, str] = field(default_factory=dict)  # rubric file name -> "lm/model.py"
    # staged file -> {"notebook": "LabRNN.ipynb", "lines": [[cell, line] or None, ...]}
    sources: dict[str, dict] = field(default_factory=dict)
    cuda: list[str] = field(default_factory=list)  # where the student's code asks for CUDA
    handed_in: dict[str, float] = field(default_factory=dict)  # file the student gave -> its mtime

    STATE_FILE = ".lmgrade-staged.json"

    def save(self) -> None:
        data = {
            "found": self.found,
            "errors": self.errors,
            "notes": self.notes,
            "packages": self.packages,
            "sources": self.sources,
            "cuda": self.cuda,
        }
        (self.path / self.STATE_FILE).write_text(json.dumps(data), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> StagedSubmission:
        state_file = path / cls.STATE_FILE
        if not state_file.is_file():
            raise SubmissionError(f"{path} was not staged by lmgrade (no {cls.STATE_FILE})")
        data = json.loads(state_file.read_text(encoding="utf-8"))
        return cls(
            path=path,
            found=data["found"],
            errors=data["errors"],
            notes=[],
            packages=data.get("packages", {}),
            sources=data.get("sources", {}),
            cuda=data.get("cuda", []),
        )

    def where(self, filename: str | Path, lineno: int) -> str | None:
        """``lm/model.py, line 42`` or ``LabRNN.ipynb, cell 9, line 4`` for a line of a staged
        file; None if the file is not part of the staged submission."""
        try:
            rel = Path(filename).resolve().relative_to(self.path.resolve()).as_posix()
        except (ValueError, OSError):
            return None
        if not (self.path / rel).is_file():  # "<string>" and the like, resolved against the cwd
            return None
        source = self.sources.get(rel)
        if source is not None:
            lines = source.get("lines") or []
            cell = lines[lineno - 1] if 0 < lineno <= len(lines) else None
            if cell:
                return f"{source['notebook']}, cell {cell[0]}, line {cell[1]}"
            return f"{source['notebook']} (extracted as {rel}, line {lineno})"
        return f"{rel}, line {lineno}"


def stage(
    assignment: Assignment,
    source: Path | None,
    dest: Path,
    *,
    base: Path | None = None,
    overlays: tuple[Path, ...] = (),
) -> StagedSubmission:
    """Build the folder the suite imports from.

    ``base`` (the reference, for mutants and variants) is copied first; otherwise the provided
    files come from the template. Then the submission's own files, then each overlay. Raises
    ``SubmissionError`` only when ``source`` is not a folder; every other problem is noted.
    """
    if source is not None and not source.is_dir():
        raise SubmissionError(f"submission folder {source} does not exist")
    dest.mkdir(parents=True, exist_ok=True)
    staged = StagedSubmission(path=dest)
    try:
        start = base if base is not None else assignment.template_dir
        if start.is_dir():
            _copy_listed(assignment, start, staged, include_modules=base is not None, search=False)
        if source is not None:
            _drop_replaced_modules(assignment, source, dest, search=True)
            _copy_listed(assignment, source, staged, include_modules=True, search=True)
            ignored = hook_files(source)
            if ignored:
                staged.notes.append(
                    f"ignored {', '.join(ignored[:8])}{' ...' if len(ignored) > 8 else ''}: a "
                    "submission's pytest configuration, start-up hooks and modules named like the "
                    "grader's libraries are never used"
                )
        for overlay in overlays:
            _drop_replaced_modules(assignment, overlay, dest, search=False)
            _copy_listed(assignment, overlay, staged, include_modules=True, search=False)
    except Exception as err:
        staged.notes.append(f"staging stopped early ({_error_line(err)}); the files copied so far are graded")
    _resolve_modules(assignment, staged)
    try:
        staged.cuda = _find_cuda_requests(assignment, staged)
    except Exception as err:
        staged.cuda = [f"(sources could not be read: {_error_line(err)})"]
    staged.save()
    return staged


def _find_cuda_requests(assignment: Assignment, staged: StagedSubmission) -> list[str]:
    """The student's module files (and the packages kept with them) that ask for CUDA."""
    from grader.compat import cuda_requests

    files: dict[str, Path] = {}
    for file in staged.found.values():
        files[file] = staged.path / file
        if "/" in file:  # a kept package: its other modules are the student's code too
            package = staged.path / Path(file).parts[0]
            for path in sorted(package.rglob("*.py")):
                files.setdefault(path.relative_to(staged.path).as_posix(), path)
    requests = cuda_requests(files, assignment.template_dir)
    return [staged.where(staged.path / name, line) or f"{name}, line {line}" for name, line in requests]


def _error_line(err: BaseException) -> str:
    text = exception_text(err).splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _copy_listed(
    assignment: Assignment, src: Path, staged: StagedSubmission, *, include_modules: bool, search: bool
) -> None:
    """Copy the rubric's files from ``src``; ``search`` (a student's folder) also looks in
    subfolders, keeps packages the submission imports by name, and notes what it found where."""
    dest = staged.path
    provided = list(assignment.provided)
    modules = [n for names_ in assignment.modules.values() for n in names_] if include_modules else []
    kept: dict[Path, list[tuple[str, str]]] = {}  # package folder -> [(file name, module)]
    for name in dict.fromkeys(provided + modules):
        found = _find(src, name) if search else (src / name if (src / name).exists() else None)
        if found is None:
            continue
        nested = search and found.parent != src and not (src / name).exists()
        if nested and name in modules and found.is_file():
            package = _package_root(src, found)
            if package is not None:
                module = _copy_package(package, found, dest, staged)
                if module is not None:
                    staged.packages[name] = module.replace(".", "/") + ".py"
                    kept.setdefault(package, []).append((name, module))
                    continue
        if nested:
            staged.notes.append(f"found {name} in {found.parent.relative_to(src).as_posix()}/ and used it")
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if found.is_dir():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(found, target, symlinks=False, ignore=_ignore_unsafe)
        elif found.is_file() and not found.is_symlink():
            shutil.copyfile(found, target)
            if search:
                staged.handed_in[name] = found.stat().st_mtime
        elif search:
            staged.notes.append(f"ignored {name}: not a regular file")
    for package, files in kept.items():
        where = package.relative_to(src).as_posix()
        names = ", ".join(n for n, _ in files)
        mods = ", ".join(m for _, m in files)
        staged.notes.append(
            f"found {names} in {where}/: kept the package `{package.name}` and "
            f"imported {'it' if len(files) == 1 else 'them'} as {mods}"
        )


# -- packages ------------------------------------------------------------------------------

MAX_PACKAGE_FILES = 200
MAX_PARSE_BYTES = 2_000_000


def _package_root(src: Path, file: Path) -> Path | None:
    """The folder to keep as a package when the submission imports ``file`` through it.

    The evidence is the code itself: an absolute import whose first name is a folder between
    the submission's root and the file (``from lm.utils import x`` for ``src/lm/model.py``), or
    a relative import, which needs the file's folder (and, for ``..``, its parents) to be a
    package. A folder whose name is not an identifier or is reserved is never a package.
    """
    folder = file.parent
    chain = []
    for parent in [folder, *folder.parents]:
        if parent == src or not parent.is_relative_to(src):
            break
        chain.append(parent)
    if not chain:
        return None
    roots, relative_levels = set(), 0
    for sibling in sorted(folder.glob("*.py"))[:MAX_PACKAGE_FILES]:
        top, level = _imports_of(sibling)
        roots |= top
        relative_levels = max(relative_levels, level)
    for candidate in chain:  # nearest first: `lm` for src/lm/model.py importing `lm.utils`
        if candidate.name in roots and _package_name_ok(candidate.name):
            return candidate
    if relative_levels:
        index = min(relative_levels - 1, len(chain) - 1)
        candidate = chain[index]
        return candidate if _package_name_ok(candidate.name) else None
    return None


def _package_name_ok(name: str) -> bool:
    """A package may not shadow the grader's stack, the standard library or anything installed
    (a student folder named `wandb` would otherwise replace the library for the whole run)."""
    if not name.isidentifier() or name in RESERVED_MODULES or name in sys.stdlib_module_names:
        return False
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return False


def _imports_of(path: Path) -> tuple[set[str], int]:
    """First names of the absolute imports in a file, and its deepest relative import level.

    A file that cannot be read or parsed (too big, too deeply nested, not Python) has none."""
    import ast

    try:
        if path.is_symlink() or path.stat().st_size > MAX_PARSE_BYTES:
            return set(), 0
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError, RecursionError, MemoryError):
        return set(), 0
    roots, level = set(), 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                level = max(level, node.level)
            elif node.module:
                roots.add(node.module.split(".")[0])
    return roots, level


def _copy_package(package: Path, file: Path, dest: Path, staged: StagedSubmission) -> str | None:
    """Copy the package's .py files to ``dest/<name>/`` (once); return the file's module name."""
    target_root = dest / package.name
    if not target_root.exists():
        copied = 0
        for path in sorted(package.rglob("*.py")):
            rel = path.relative_to(package)
            if copied >= MAX_PACKAGE_FILES:
                staged.notes.append(
                    f"package `{package.name}`: only its first {MAX_PACKAGE_FILES} .py files were staged"
                )
                break
            if not _safe_package_file(package, rel):
                continue
            target = target_root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied += 1
    rel = file.relative_to(package).with_suffix("")
    if not (target_root / rel.with_suffix(".py")).is_file():
        return None
    return ".".join((package.name, *rel.parts))


def _safe_package_file(package: Path, rel: Path) -> bool:
    """No symlinks on the way, no caches, hook files, .pth or reserved names, not too deep."""
    if len(rel.parts) > MAX_SEARCH_DEPTH or "__MACOSX" in rel.parts or "__pycache__" in rel.parts:
        return False
    if any(not part.isidentifier() for part in rel.parts[:-1]):
        return False
    path = package
    for part in rel.parts:
        path = path / part
        if path.is_symlink():
            return False
    return (
        path.is_file() and rel.name not in HOOK_FILES and rel.stem not in RESERVED_MODULES and rel.stem.isidentifier()
    )


def _drop_replaced_modules(assignment: Assignment, src: Path, dest: Path, *, search: bool) -> None:
    """A module given under any accepted name replaces the base's file under every name
    (a mutant's LabRNN.ipynb must not lose to the reference's LabRNN.py)."""
    for names in assignment.modules.values():
        given = any((_find(src, n) if search else (src / n if (src / n).is_file() else None)) for n in names)
        if given:
            for n in names:
                (dest / n).unlink(missing_ok=True)


HOOK_FILES = frozenset(
    {"conftest.py", "pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml", "sitecustomize.py", "usercustomize.py"}
)


def hook_files(src: Path) -> list[str]:
    """Files in a submission that would configure pytest, hook Python's start-up or shadow a
    library if they were used (they never are: staging copies only the rubric's files)."""
    found = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if len(rel.parts) > MAX_SEARCH_DEPTH or "__MACOSX" in rel.parts:
            continue
        name = path.name
        shadows = (path.suffix == ".py" or path.is_dir()) and path.stem in RESERVED_MODULES - {
            "conftest",
            "sitecustomize",
            "usercustomize",
        }
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
        try:
            _keep_the_changed_form(assignment, staged, names)
            _resolve_module(staged, alias, names)
        except Exception as err:
            staged.errors[alias] = f"{' or '.join(names)} could not be staged: {_error_line(err)}"


def _keep_the_changed_form(assignment: Assignment, staged: StagedSubmission, names: tuple[str, ...]) -> None:
    """A hand-in with both forms of one file (LabRNN.py and LabRNN.ipynb, both in the handout):
    grade the one the student changed, and say so. The other is removed from the staged folder."""
    given = [n for n in names if n in staged.handed_in and (staged.path / n).is_file()]
    if len(given) < 2:
        return
    changed = [n for n in given if _code_of(staged.path / n) != _code_of(assignment.template_dir / n)]
    if len(changed) == 1:
        chosen, why = changed[0], "the one you changed; the other is the handout's as given"
    elif changed:
        chosen = max(changed, key=lambda n: staged.handed_in[n])
        why = "both were changed: the one saved last"
    else:
        chosen, why = given[0], "neither differs from the handout"
    for n in given:
        if n != chosen:
            (staged.path / n).unlink()
    staged.notes.append(f"both {' and '.join(given)} were handed in: graded {chosen}, {why}")


def _code_of(path: Path) -> str | None:
    """What a file says as code: a notebook's code cells (outputs and metadata aside)."""
    if not path.is_file():
        return None
    if path.suffix == ".ipynb":
        import nbformat

        try:
            nb = nbformat.read(str(path), as_version=4)
        except Exception:
            return path.read_text(encoding="utf-8", errors="replace")
        cells = [c.source for c in nb.cells if c.cell_type == "code"]
        return "\n".join(line.rstrip() for cell in cells for line in cell.splitlines() if line.strip())
    return path.read_text(encoding="utf-8", errors="replace")


def _resolve_module(staged: StagedSubmission, alias: str, names: tuple[str, ...]) -> None:
    for name in names:
        packaged = staged.packages.get(name)
        if packaged and (staged.path / packaged).is_file():
            staged.found[alias] = packaged
            return
    present = [n for n in names if (staged.path / n).is_file()]
    if not present:
        staged.errors[alias] = f"the submission has no {' or '.join(names)}"
        return
    chosen = present[0]
    if chosen.endswith(".ipynb"):
        chosen = _notebook_to_module(staged, alias, chosen)
        if chosen is None:
            return
    stem = Path(chosen).stem
    if stem in RESERVED_MODULES:
        staged.errors[alias] = f"{chosen} would shadow the library module {stem!r}; rename it"
        return
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
    staged.sources[target.name] = {"notebook": name, "lines": extract.line_map, "lost": extract.lost}
    staged.notes.append(extract.report())
    return target.name


def module_name(file: str) -> str:
    """The import name of a staged file: ``model.py`` -> ``model``, ``lm/model.py`` -> ``lm.model``."""
    return ".".join(Path(file).with_suffix("").parts)


def exception_text(err: BaseException) -> str:
    """An exception's message, readable on one screen: leading blank lines and banner lines
    (NLTK's ``LookupError`` starts with a newline and a row of stars) removed."""
    try:
        text = str(err)
    except Exception:
        return f"<{type(err).__name__} whose message cannot be shown>"
    lines = [ln.rstrip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln.strip() and set(ln.strip()) != {"*"}]
    if not lines:
        return ""
    indent = min(len(ln) - len(ln.lstrip()) for ln in lines)
    return "\n".join(ln[indent:] for ln in lines)


def syntax_problems(staged: StagedSubmission, python: str = "") -> list[str]:
    """One line per staged module that does not parse: read by the parent (``ast`` only, nothing
    runs), so the grading's notes, and a batch's grades.csv, say why every test importing it
    scored 0. Skipped when the course's Python (``python``, "3.12") is newer than this one: its
    syntax may be newer than this parser's."""
    import ast

    course = tuple(int(x) for x in python.split(".")[:2] if x.isdigit())
    if course > sys.version_info[:2]:
        return []
    problems = []
    for file in sorted(set(staged.found.values())):
        path = staged.path / file
        try:
            if path.is_symlink() or path.stat().st_size > MAX_PARSE_BYTES:
                continue  # as staging's own parse: the test process reports what is wrong
            ast.parse(path.read_bytes(), filename=str(path))
        except SyntaxError as err:
            where = staged.where(path, err.lineno or 0) or f"{file}, line {err.lineno}"
            problems.append(f"{where}: SyntaxError: {err.msg}; every test that imports it fails")
        except (OSError, ValueError, RecursionError, MemoryError):
            continue  # the import in the test process says what is wrong
    return problems


# -- import side (runs in the process that executes the suite) ----------------------------


class Modules:
    """``sub``: attribute access imports the submission's module for that alias."""

    def __init__(self, staged: StagedSubmission, fixtures: Path):
        self._staged = staged
        self._loaded: dict[str, ModuleProxy] = {}
        self.live: dict[str, ModuleType] = {}  # alias -> a module already in this process (a notebook's)
        self._failed: dict[str, str] = dict(staged.errors)
        self.path = staged.path
        self.fixtures = fixtures

    def __getattr__(self, alias: str) -> ModuleProxy:
        if alias.startswith("_"):
            raise AttributeError(alias)
        if alias in self._loaded:
            return self._loaded[alias]
        if alias in self.live:
            module = self.live[alias]
            self._loaded[alias] = ModuleProxy(module, getattr(module, "__file__", None) or module.__name__)
            return self._loaded[alias]
        if alias in self._failed:
            raise SubmissionError(self._failed[alias])
        if alias not in self._staged.found:
            raise SubmissionError(f"the test asked for module {alias!r}, which the rubric does not name")
        file = self._staged.found[alias]
        try:
            module = _import_preserving_rng(file, self._staged)
        except SubmissionError as err:
            self._failed[alias] = str(err)
            raise
        source = self._staged.sources.get(file, {})  # a notebook's: name it, not its extraction
        self._loaded[alias] = ModuleProxy(module, source.get("notebook", file), source.get("lost"))
        return self._loaded[alias]


class ModuleProxy:
    """A student module whose missing names fail with a message naming the file."""

    def __init__(self, module: ModuleType, file: str, lost: dict | None = None):
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_file", file)
        object.__setattr__(self, "_lost", lost or {})  # names of notebook cells skipped whole

    def __getattr__(self, name: str):
        try:
            return getattr(self._module, name)
        except AttributeError:
            why = self._lost.get(name)
            skipped = f" ({why}; that cell was skipped whole)" if why else ""
            raise SubmissionError(f"{self._file} does not define `{name}`{skipped}") from None

    def __setattr__(self, name: str, value) -> None:
        setattr(self._module, name, value)


def _import_preserving_rng(file: str, staged: StagedSubmission) -> ModuleType:
    """Import a student module without letting import-time randomness shift the test's inputs."""
    import numpy as np
    import torch

    name = module_name(file)
    shown = staged.sources.get(file, {}).get("notebook", file)
    folder = staged.path
    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    try:
        if name in sys.modules:
            return sys.modules[name]
        return importlib.import_module(name)
    except SyntaxError as err:
        where = staged.where(err.filename, err.lineno or 0) if err.filename else None
        if where is None or ".ipynb" not in where:
            where = f"{_shown_file(err.filename, staged) or file}: SyntaxError at line {err.lineno}"
        else:  # "LabRNN.ipynb, cell 3, line 2"
            notebook, _, at = where.partition(", ")
            where = f"{notebook}: SyntaxError at {at}"
        raise SubmissionError(f"{where}: {err.msg}") from None
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        if (folder / f"{missing}.py").exists() or (folder / missing).is_dir() or missing == name.split(".")[0]:
            raise SubmissionError(f"importing {shown} failed: {err}") from None
        raise SubmissionError(
            f"{shown} imports `{missing}`, which this course's grading environment does not provide"
        ) from None
    except BaseException as err:
        where = student_location(err.__traceback__, staged)
        raise SubmissionError(f"importing {shown} raised {describe_exception(err, where)}") from None
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


def _shown_file(filename: str | None, staged: StagedSubmission) -> str | None:
    try:
        return Path(filename).resolve().relative_to(staged.path.resolve()).as_posix()
    except (TypeError, ValueError, OSError):
        return None


def student_location(tb, staged: StagedSubmission | None) -> str:
    """`` (raised in lm/model.py, line 42, in MultiHeadAttention.forward)`` for the innermost
    frame of a traceback that is in the student's staged files, else ""."""
    if staged is None or tb is None:
        return ""
    last = None
    for frame, lineno in traceback.walk_tb(tb):
        code = frame.f_code
        where = staged.where(code.co_filename, lineno)
        if where is not None:
            last = (where, getattr(code, "co_qualname", code.co_name))  # co_qualname: 3.11+
    if last is None:
        return ""
    where, qualname = last
    return f" (raised in {where}, in {qualname})" if qualname != "<module>" else f" (raised in {where})"


def describe_exception(err: BaseException, where: str = "") -> str:
    """``LookupError: first line (raised in ...)`` and the message's other lines below it."""
    text = exception_text(err)
    first, _, rest = text.partition("\n")
    head = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return head + where + (f"\n{rest}" if rest else "")


def module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None
