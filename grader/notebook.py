"""Turn a student's Jupyter notebook into an importable module, and convert percent-format sources.

Some handouts ask for notebooks (Duke ECE 661: `LabRNN.ipynb`). A notebook is a script with
training runs, plots and shell magics between the definitions the tests need, so it cannot be
imported as it is. `extract_notebook` keeps what a test can call and drops what would run:

- taken: imports, top-level `def`/`class`, and assignments whose value is cheap to build:
  literals, containers of literals, expressions over names already taken (e.g. `STOP_WORDS =
  set(stopwords.words("english"))`), and instances of classes defined in the notebook whose
  constructor loads, downloads or trains nothing (`hparams = HyperParams()`, which functions
  often read as a global); attribute or item assignments on such a value (`hparams.LR = 0.01`);
  a `try` block made only of such statements;
- skipped: every other top-level statement (calls, loops, `if` blocks, training runs, displays),
  assignments whose value calls a notebook-defined function or a loading/training method
  (`from_pretrained`, `read_csv`, `train`, ...), and shell or magic lines (`!pip`, `%matplotlib`),
  which are blanked before the cell is parsed;
- errors: a cell that does not parse (a syntax error, or nesting too deep for Python's parser)
  is skipped whole and reported; the other cells still count.

Cells keep their order, so a later definition overrides an earlier one as in a notebook run.
Cells are numbered from 1 in notebook order, markdown cells included.

`py_to_notebook` / `notebook_to_py` convert between a notebook and jupytext's percent format
(`# %%` code cells, `# %% [markdown]` text cells), so notebooks are generated from `.py` sources.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

__all__ = ["NotebookError", "NotebookExtract", "extract_cells", "extract_notebook", "notebook_to_py", "py_to_notebook"]

# a top-level `def name` / `class name` line, found in the text of a cell that does not parse
_TOP_LEVEL_DEF = re.compile(r"^(?:async[ \t]+def|def|class)[ \t]+([A-Za-z_]\w*)", re.MULTILINE)

# Builtins whose call is cheap and has no side effect: a constant may be built with them.
SAFE_BUILTINS = frozenset(
    {
        "set",
        "frozenset",
        "list",
        "tuple",
        "dict",
        "str",
        "int",
        "float",
        "bool",
        "bytes",
        "len",
        "range",
        "sorted",
        "reversed",
        "min",
        "max",
        "sum",
        "abs",
        "round",
        "enumerate",
        "zip",
        "map",
        "filter",
        "any",
        "all",
        "chr",
        "ord",
        "repr",
        "isinstance",
        "slice",
    }
)
# Method or function names that load data or models, train, or touch the outside world: an
# assignment calling one is a run, not a constant (`model = AutoModel.from_pretrained("gpt2")`).
RUN_CALLS = frozenset(
    {
        "from_pretrained",
        "load_dataset",
        "load_from_disk",
        "read_csv",
        "read_json",
        "read_parquet",
        "read_table",
        "read_excel",
        "read_pickle",
        "load",
        "download",
        "urlopen",
        "urlretrieve",
        "get",
        "post",
        "train",
        "fit",
        "evaluate",
        "predict",
        "generate",
        "save",
        "save_pretrained",
        "to_csv",
        "system",
        "run",
        "call",
        "check_call",
        "check_output",
        "Popen",
        "sleep",
        "mount",
        "login",
        "pipeline",
        "open",
        "input",
        "exec",
        "eval",
        "compile",
        "__import__",
        "cuda",
        "to",
        "backward",
        "step",
        "show",
        "savefig",
        "plot",
        "display",
        "print",
    }
)
# Calls a constructor may make and stay cheap: `kwargs.get(...)`, `self.to(device)`, `print(...)`,
# `self.eval()`; any other RUN_CALLS name in a notebook class's constructor makes it a run.
CONSTRUCTOR_SAFE_CALLS = frozenset({"get", "to", "cuda", "print", "eval"})
CONSTRUCTOR_METHODS = ("__init__", "__new__", "__post_init__")
RULE = (
    "Rule: the tests import your definitions, imports and constants, and skip every top-level "
    "statement that runs something (training, loading data or models, downloads, plots, "
    "prints). Assignments are kept when their value is cheap to build: literals, library "
    "calls that load nothing, and instances of classes defined here whose constructor loads "
    "or trains nothing (e.g. `hparams = HyperParams()`)."
)
# Modules that exist only inside Jupyter or Colab: their imports are guarded, not fatal.
NOTEBOOK_ONLY_MODULES = ("google.colab", "IPython", "ipywidgets", "tqdm.notebook")
# Cell magics whose body is not Python: the whole cell is skipped.
FOREIGN_CELL_MAGICS = frozenset(
    {
        "bash",
        "sh",
        "script",
        "html",
        "HTML",
        "javascript",
        "js",
        "latex",
        "markdown",
        "svg",
        "writefile",
        "file",
        "perl",
        "ruby",
        "sx",
        "system",
        "python2",
        "python3",
        "pypy",
    }
)
_MAGIC_LINE = re.compile(r"^(\s*)(!|%|\w+\s*=\s*!|\w+\s*=\s*%)")
_PLAIN_ASSIGN_TARGET = (ast.Name, ast.Tuple, ast.List)


class NotebookError(ValueError):
    """The file is not a readable Jupyter notebook (bad JSON or not nbformat)."""


@dataclass(frozen=True)
class NotebookExtract:
    """What `extract_notebook` made of a notebook: a module text and an account for the student."""

    source: str
    taken: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    undefined: list[str] = field(default_factory=list)
    name: str = "notebook"
    # def/class names written in cells that were skipped whole -> why ("cell 9: SyntaxError ...")
    lost: dict = field(default_factory=dict)
    # for each line of `source`: [cell number, line in that cell], or None (lines lmgrade added)
    line_map: list = field(default_factory=list)

    def report(self) -> str:
        """A plain-text account: what the tests will see and what they will not."""
        lines = [f"{self.name}: cells are numbered from 1 in notebook order (markdown included).", RULE]
        sections = [
            ("Errors (these cells were skipped whole; fix them so the tests can see their code)", self.errors),
            ("Names used by your definitions but only set by skipped statements", self.undefined),
            ("Taken (the tests import these)", self.taken),
            ("Skipped (not run by the tests)", self.skipped),
        ]
        for title, items in sections:
            if items:
                lines.append(f"{title}:")
                lines.extend(f"  - {item}" for item in items)
        return "\n".join(lines)


# ---------------------------------------------------------------- reading


def extract_notebook(path: Path) -> NotebookExtract:
    """Read a notebook file and extract its importable part (see the module docstring)."""
    path = Path(path)
    try:
        # Schema problems found after reading (an odd metadata key) are only warnings, as in
        # Jupyter; a notebook the reader cannot make sense of is an error.
        nb = nbformat.read(str(path), as_version=4, capture_validation_error={})
    except nbformat.reader.NotJSONError as err:
        raise NotebookError(
            f"{path.name} is not a valid notebook: it is not JSON (was it saved from Jupyter or Colab?)"
        ) from err
    except UnicodeDecodeError as err:
        raise NotebookError(f"{path.name} is not a valid notebook: it is not UTF-8 text") from err
    except nbformat.ValidationError as err:
        raise NotebookError(f"{path.name} is not a valid notebook: {_first_line(err)}") from err
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise NotebookError(
            f"{path.name} is not a valid notebook: it does not have the "
            f"structure of a Jupyter notebook ({_first_line(err)})"
        ) from err
    except OSError as err:
        raise NotebookError(f"{path.name} could not be read: {err}") from err
    if not isinstance(nb.get("cells"), list):
        raise NotebookError(f"{path.name} is not a valid notebook: it has no list of cells")
    cells = []
    for cell in nb.cells:
        source = cell.get("source", "")
        if isinstance(source, list):  # nbformat normally joins it; be lenient with odd writers
            source = "".join(source)
        cells.append((cell.get("cell_type", "code"), source))
    return extract_cells(cells, name=path.name)


def extract_cells(cells: list[tuple[str, str]], name: str = "notebook") -> NotebookExtract:
    """Extract from (cell_type, source) pairs; the work behind `extract_notebook`."""
    state = _Extraction()
    for number, (cell_type, source) in enumerate(cells, start=1):
        if cell_type == "code" and source.strip():
            state.add_cell(number, source)
    source, line_map = state.module_text(name)
    return NotebookExtract(
        source=source,
        taken=state.taken,
        skipped=state.skipped,
        errors=state.errors,
        undefined=state.undefined_uses(),
        name=name,
        line_map=line_map,
        lost=state.lost,
    )


class _Extraction:
    """Walks the cells in order, keeping the statements a test may import."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, list[str], list]] = []  # (cell, lines, line map)
        self.taken: list[str] = []
        self.skipped: list[str] = []
        self.errors: list[str] = []
        self.lost: dict[str, str] = {}  # def/class names of cells skipped whole -> why
        self.defined: set[str] = set()  # names bound by taken statements so far
        self.local_defs: set[str] = set()  # functions and classes defined in the notebook
        self.def_nodes: dict[str, ast.AST] = {}  # the latest definition of each of them
        self.imported: set[str] = set()  # names bound by taken imports
        self.skipped_binds: dict[str, int] = {}  # name -> cell of a skipped statement binding it
        self.skipped_calls: dict[str, set[str]] = {}  # name -> what that skipped statement calls
        self.globals_used: list[tuple[str, int, set[str]]] = []  # (def name, cell, free names)

    def add_cell(self, number: int, source: str) -> None:
        code = self._strip_magics(number, source)
        if code is None:
            return
        try:
            tree = ast.parse(code)
        except SyntaxError as err:
            where = f" at line {err.lineno}" if err.lineno else ""
            self.errors.append(f"cell {number}: SyntaxError{where}: {err.msg}")
            self._note_lost(code, self.errors[-1])
            return
        except (RecursionError, MemoryError) as err:
            # Python's parser gives up on deep nesting (RecursionError or MemoryError).
            self.errors.append(f"cell {number}: nested too deeply for Python to read ({type(err).__name__})")
            self._note_lost(code, self.errors[-1])
            return
        lines = code.splitlines()
        for node in tree.body:
            try:
                self._add_statement(number, node, lines)
            except (RecursionError, MemoryError) as err:
                self.errors.append(
                    f"cell {number}: the statement at line {node.lineno} is nested "
                    f"too deeply to read ({type(err).__name__}); skipped"
                )

    def _note_lost(self, code: str, why: str) -> None:
        """Remember the top-level def/class names of a cell skipped whole (read from its text,
        since it does not parse), so a test asking for one can say why it is missing."""
        for match in _TOP_LEVEL_DEF.finditer(code):
            self.lost[match.group(1)] = why

    def _strip_magics(self, number: int, source: str) -> str | None:
        """Blank shell and magic lines (keeping line numbers); None if the cell is not Python."""
        lines = source.splitlines()
        first = lines[0].strip() if lines else ""
        if first.startswith("%%"):
            magic = first[2:].split()[0] if first[2:].split() else ""
            if magic in FOREIGN_CELL_MAGICS:
                self.skipped.append(f"cell {number}: cell magic `{_short(first)}` (not Python)")
                return None
            self.skipped.append(f"cell {number}: cell magic line `{_short(first)}`")
            lines[0] = ""
        for i, line in enumerate(lines):
            match = _MAGIC_LINE.match(line)
            if match and not line.lstrip().startswith("%%"):
                self.skipped.append(f"cell {number}: shell/magic line `{_short(line.strip())}`")
                lines[i] = match.group(1) + "pass"  # keeps an indented block non-empty
        return "\n".join(lines) + "\n"

    def _add_statement(self, number: int, node: ast.stmt, lines: list[str]) -> None:
        if isinstance(node, ast.Pass):  # also what a blanked magic line becomes
            return
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            return  # a docstring or a bare literal: nothing to run, nothing to report
        what, reason = self._judge(node)
        if reason is None:
            self.chunks.append((number, *self._source_of(node, lines)))
            self.taken.append(f"{what} (cell {number})")
            bound = _bound_names(node)
            self.defined |= bound
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self.imported |= bound
            for name in bound:
                self.skipped_binds.pop(name, None)
                self.skipped_calls.pop(name, None)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.local_defs.add(node.name)
                self.def_nodes[node.name] = node
                self.globals_used.append((node.name, number, _free_names(node)))
        else:
            self.skipped.append(f"cell {number}: {reason} `{_short(_first_code_line(node, lines))}`")
            calls = _called_names(node)
            for name in _bound_names(node):
                if name not in self.skipped_binds:
                    self.skipped_binds[name] = number
                    self.skipped_calls[name] = calls

    def _judge(self, node: ast.stmt) -> tuple[str, str | None]:
        """(description, None) when the statement is taken, else (description, why skipped)."""
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return _describe_import(node), None
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return f"def {node.name}", None
        if isinstance(node, ast.ClassDef):
            return f"class {node.name}", None
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            return self._judge_assignment(node)
        if isinstance(node, ast.Try) and self._all_simple(node):
            return "try block of imports", None
        if isinstance(node, ast.Expr):
            call = _called_name(node.value)
            return "call", (f"top-level call to {call}" if call else "top-level expression")
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            return "loop", "top-level loop (a run, not a definition)"
        if isinstance(node, (ast.With, ast.AsyncWith)):
            return "with", "top-level with block (a run, not a definition)"
        return type(node).__name__, f"top-level {type(node).__name__.lower()} statement"

    def _judge_assignment(self, node: ast.Assign | ast.AnnAssign) -> tuple[str, str | None]:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = sorted(_bound_names(node))
        what = "constant " + ", ".join(names) if names else "assignment"
        if node.value is None:
            return what, "annotation without a value"
        if not all(_plain_target(t) for t in targets):
            roots = [self._settable_root(t) for t in targets]
            if not all(roots):
                return what, "assignment to an attribute or item"
            what = "setting " + ", ".join(_unparse(t) or "?" for t in targets)
            for target in targets:  # `hparams.LR = x`: subscripts in the target are code too
                reason = self._why_not_simple(target)
                if reason:
                    return what, reason
        reason = self._why_not_simple(node.value)
        value = node.value
        if (
            reason is None
            and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and isinstance(self.def_nodes.get(value.func.id), ast.ClassDef)
        ):
            what = f"object {', '.join(names)} (a {value.func.id})"
        return what, reason

    def _settable_root(self, target: ast.expr) -> str | None:
        """`hparams` for `hparams.LR` / `hparams["lr"]` when `hparams` is a value this extract
        keeps (not an imported module: `torch.backends.cudnn.benchmark = True` stays a run)."""
        if not isinstance(target, (ast.Attribute, ast.Subscript)):
            return None
        root = _dotted_root(target)
        if root is None or root not in self.defined or root in self.imported:
            return None
        return root

    def _why_not_simple(self, expr: ast.expr) -> str | None:
        """None if `expr` may be evaluated at import time, else why not."""
        for sub in ast.walk(expr):
            if isinstance(sub, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                continue
            if (
                isinstance(sub, ast.Name)
                and isinstance(sub.ctx, ast.Load)
                and sub.id not in self.defined
                and not hasattr(builtins, sub.id)
                and not _bound_inside(expr, sub.id)
            ):
                return f"uses `{sub.id}`, which no taken statement defines:"
            if isinstance(sub, (ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)):
                return "not a simple value:"
            if isinstance(sub, ast.Call):
                reason = self._why_call_not_simple(sub)
                if reason:
                    return reason
        return None

    def _why_call_not_simple(self, call: ast.Call) -> str | None:
        func = call.func
        if isinstance(func, ast.Name):
            if isinstance(self.def_nodes.get(func.id), ast.ClassDef):
                heavy = self._heavy(func.id, set())
                if heavy:
                    return f"instantiates {func.id}, whose constructor {heavy} (a run):"
                return None  # a cheap construction; its arguments are judged by the caller's walk
            if func.id in self.local_defs:
                return f"calls {func.id}, defined in this notebook (a run):"
            if func.id in RUN_CALLS:
                return f"calls {func.id}:"
            if func.id in SAFE_BUILTINS or func.id in self.defined:
                return None
            return f"calls {func.id}:"
        root, attr = _dotted_root(func), getattr(func, "attr", None)
        if root is None or root not in self.defined or root in self.local_defs:
            return "calls something that is not an import:"
        if attr in RUN_CALLS:
            return f"calls .{attr}() (loads, trains or has side effects):"
        return None

    def _heavy(self, name: str, seen: set[str]) -> str | None:
        """Why running notebook definition `name` (a class's constructor, or a function it
        calls) would load, download, train or have side effects; None if it would not."""
        node = self.def_nodes.get(name)
        if node is None or name in seen:
            return None
        seen.add(name)
        if isinstance(node, ast.ClassDef):
            bodies = [
                s
                for s in node.body
                if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name in CONSTRUCTOR_METHODS
            ]
            for body in bodies:  # a global the constructor reads must exist at import time
                missing = sorted(n for n in _free_names(body) if n not in self.defined)
                if missing:
                    return f"reads `{missing[0]}`, which no taken statement defines"
            for base in node.bases:  # a notebook base class's constructor runs too
                if isinstance(base, ast.Name) and base.id in self.def_nodes:
                    why = self._heavy(base.id, seen)
                    if why:
                        return why
        else:
            bodies = [node]
        for body in bodies:
            for sub in ast.walk(body):
                if not isinstance(sub, ast.Call):
                    continue
                func = sub.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if called in RUN_CALLS and called not in CONSTRUCTOR_SAFE_CALLS:
                    return f"calls {called}()"
                if isinstance(func, ast.Name) and func.id in self.def_nodes and func.id != name:
                    why = self._heavy(func.id, seen)
                    if why:
                        return f"calls {func.id}, which {why}"
        return None

    def _all_simple(self, node: ast.Try) -> bool:
        body = node.body + node.orelse + node.finalbody
        body += [s for handler in node.handlers for s in handler.body]
        for stmt in body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.Pass)):
                continue
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and self._judge_assignment(stmt)[1] is None:
                continue
            return False
        return True

    @staticmethod
    def _source_of(node: ast.stmt, lines: list[str]) -> tuple[list[str], list[int | None]]:
        """The statement's lines and, for each, its line number in the cell (None: added)."""
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        text = lines[start - 1 : node.end_lineno]
        numbers: list[int | None] = list(range(start, start + len(text)))
        if isinstance(node, (ast.Import, ast.ImportFrom)) and _notebook_only(node):
            # Colab/Jupyter-only modules are absent where tests run; only their uses should fail.
            text = ["try:", *("    " + line for line in text), "except ImportError:", "    pass"]
            numbers = [None, *numbers, None, None]
        return text, numbers

    def module_text(self, name: str) -> tuple[str, list]:
        """The module's source and, per line, [cell, line in cell] or None."""
        out = [f'"""Extracted from {name} by lmgrade: imports, definitions and constants only."""']
        line_map: list = [None]
        for index, (cell, text, numbers) in enumerate(self.chunks):
            if index:
                out.append("")
                line_map.append(None)
            out.append(f"# --- cell {cell} ---")
            line_map.append(None)
            out.extend(text)
            line_map.extend([cell, n] if n is not None else None for n in numbers)
        return "\n".join(out) + "\n", line_map

    def undefined_uses(self) -> list[str]:
        notes = []
        for def_name, cell, free in self.globals_used:
            for name in sorted(free):
                if def_name in self.skipped_calls.get(name, ()):
                    # `x_test = load_imdb()[2]` does not make load_imdb depend on x_test: an
                    # unfinished load_imdb that reads it would be reported for its own result
                    continue
                if name in self.skipped_binds and name not in self.defined:
                    notes.append(
                        f"{def_name} (cell {cell}) uses `{name}`, which is only set by a "
                        f"skipped statement (cell {self.skipped_binds[name]}); "
                        f"pass it as an argument instead"
                    )
        return notes


# ---------------------------------------------------------------- AST helpers


def _describe_import(node: ast.Import | ast.ImportFrom) -> str:
    def alias(a: ast.alias) -> str:
        return f"{a.name} as {a.asname}" if a.asname else a.name

    if isinstance(node, ast.Import):
        return "import " + ", ".join(alias(a) for a in node.names)
    names = ", ".join(alias(a) for a in node.names)
    return f"from {'.' * node.level}{node.module or ''} import {names}"


def _notebook_only(node: ast.Import | ast.ImportFrom) -> bool:
    modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
    return any(m == root or m.startswith(root + ".") for m in modules for root in NOTEBOOK_ONLY_MODULES)


def _plain_target(target: ast.expr) -> bool:
    if isinstance(target, ast.Name):
        return True
    if isinstance(target, (ast.Tuple, ast.List)):
        return all(_plain_target(t) for t in target.elts)
    if isinstance(target, ast.Starred):
        return _plain_target(target.value)
    return False


def _bound_names(node: ast.stmt) -> set[str]:
    """Top-level names a statement binds."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
        targets = [node.target]
    elif isinstance(node, ast.Try):
        return {n for s in node.body + node.orelse + node.finalbody for n in _bound_names(s)}
    elif isinstance(node, (ast.With, ast.If, ast.While)):
        return {n for s in node.body for n in _bound_names(s)}
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _bound_inside(expr: ast.expr, name: str) -> bool:
    """True if `name` is a comprehension variable or lambda argument inside `expr`."""
    for sub in ast.walk(expr):
        if isinstance(sub, ast.comprehension) and any(
            isinstance(n, ast.Name) and n.id == name for n in ast.walk(sub.target)
        ):
            return True
        if isinstance(sub, ast.Lambda) and name in {a.arg for a in sub.args.args}:
            return True
    return False


def _free_names(node: ast.AST) -> set[str]:
    """Names a function or class reads without binding them (an over-approximation is fine)."""
    loaded, stored = set(), set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            (loaded if isinstance(sub.ctx, ast.Load) else stored).add(sub.id)
        elif isinstance(sub, ast.arg):
            stored.add(sub.arg)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub is not node:
            stored.add(sub.name)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            stored |= _bound_names(sub)
    return {n for n in loaded - stored if not hasattr(builtins, n)}


def _dotted_root(expr: ast.expr) -> str | None:
    while isinstance(expr, (ast.Attribute, ast.Call, ast.Subscript)):
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _called_name(expr: ast.expr) -> str | None:
    if not isinstance(expr, ast.Call):
        return None
    return _unparse(expr.func)


def _unparse(expr: ast.expr) -> str | None:
    try:
        return ast.unparse(expr)
    except (ValueError, TypeError, RecursionError):  # deep nesting: unparse recurses
        return None


def _called_names(node: ast.AST) -> set[str]:
    """Names of the functions and classes a statement calls directly (`f(...)`)."""
    return {sub.func.id for sub in ast.walk(node) if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name)}


def _first_code_line(node: ast.stmt, lines: list[str]) -> str:
    return lines[node.lineno - 1].strip() if node.lineno - 1 < len(lines) else ""


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# ---------------------------------------------------------------- percent format


def py_to_notebook(text: str) -> nbformat.NotebookNode:
    """A notebook from a jupytext percent-format source, with stable cell ids and no outputs."""
    import jupytext  # deferred: only template generation needs it

    nb = jupytext.reads(text, fmt="py:percent")
    nb.metadata = nbformat.from_dict(
        {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        }
    )
    for index, cell in enumerate(nb.cells):
        cell.id = f"cell-{index + 1}"  # jupytext draws random ids; regenerated files must not change
        cell.metadata = nbformat.from_dict({})
    nbformat.validate(nb)
    return nb


def notebook_to_py(nb: nbformat.NotebookNode) -> str:
    """The percent-format source of a notebook (outputs dropped)."""
    import jupytext

    return jupytext.writes(nb, fmt="py:percent")
