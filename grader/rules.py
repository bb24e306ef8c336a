"""Handout rules ("do not use nn.LayerNorm"): the names they cover, and the parent's static check.

A rubric rule lists what it forbids: torch functions by dotted name
(``torch.nn.functional.layer_norm``), aten operators (``aten.native_layer_norm``), or a named
group (``@layer_norm``) that lists every entry point of one operation. Two checks enforce it:

* in the test process, ``grader.guards`` catches the operations where torch dispatches them,
  however they were reached (an alias, ``getattr``, a module's forward), while the rule's tests
  run; a function is matched by its object, or by its last name part among torch's callables;
* in the grading parent, which never runs student code, ``scan`` reads the submission's source:
  a use of a forbidden function, of a torch module class built on one (``nn.LayerNorm`` calls
  ``layer_norm``), or a dynamic lookup on a torch module that a static reading cannot follow
  (``getattr(F, name)``, ``vars(F)``, ``F.__dict__``, ``eval``/``exec``/``__import__``) fails the
  rule's tests. The test process cannot hide what its source says.

This module imports neither torch nor the submission.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

# Named groups, so a rubric can say "@layer_norm" rather than list every entry point.
# These are facts about torch, not about any assignment.
OP_GROUPS: dict[str, tuple[str, ...]] = {
    "@layer_norm": (
        "torch.nn.functional.layer_norm",
        "torch.layer_norm",
        "torch.native_layer_norm",
        "aten.layer_norm",
        "aten.native_layer_norm",
    ),
    "@sdpa": (
        "torch.nn.functional.scaled_dot_product_attention",
        "aten.scaled_dot_product_attention",
        "aten._scaled_dot_product_attention_math",
        "aten._scaled_dot_product_flash_attention",
        "aten._scaled_dot_product_flash_attention_for_cpu",
        "aten._scaled_dot_product_efficient_attention",
        "aten._scaled_dot_product_cudnn_attention",
        "aten._fused_sdp_choice",
    ),
    "@multihead_attention": (
        "torch.nn.functional.multi_head_attention_forward",
        "aten._native_multi_head_attention",
    ),
    "@transformer": (
        "aten._transformer_encoder_layer_fwd",
        "aten._native_multi_head_attention",
    ),
}
# torch.nn module classes and the forbidden functions their forward calls (facts about torch).
CLASS_CALLS: dict[str, tuple[str, ...]] = {
    "torch.nn.LayerNorm": ("torch.nn.functional.layer_norm",),
    "torch.nn.modules.normalization.LayerNorm": ("torch.nn.functional.layer_norm",),
    "torch.nn.MultiheadAttention": (
        "torch.nn.functional.multi_head_attention_forward",
        "torch.nn.functional.scaled_dot_product_attention",
    ),
    "torch.nn.TransformerEncoderLayer": (
        "aten._transformer_encoder_layer_fwd",
        "torch.nn.functional.layer_norm",
        "torch.nn.functional.multi_head_attention_forward",
    ),
    "torch.nn.TransformerDecoderLayer": (
        "torch.nn.functional.layer_norm",
        "torch.nn.functional.multi_head_attention_forward",
    ),
    "torch.nn.TransformerEncoder": ("aten._transformer_encoder_layer_fwd", "torch.nn.functional.layer_norm"),
    "torch.nn.TransformerDecoder": (
        "torch.nn.functional.layer_norm",
        "torch.nn.functional.multi_head_attention_forward",
    ),
    "torch.nn.Transformer": ("torch.nn.functional.layer_norm", "torch.nn.functional.multi_head_attention_forward"),
}
DYNAMIC_BUILTINS = frozenset({"eval", "exec", "compile", "__import__"})
DYNAMIC_MODULES = frozenset({"importlib"})


class UnknownOperation(ValueError):
    """A rule names an operation or a group that does not exist."""


def expand(ops) -> tuple[str, ...]:
    """The dotted names a rule's ``forbid`` list stands for (groups expanded)."""
    out: list[str] = []
    for op in ops:
        if op.startswith("@"):
            if op not in OP_GROUPS:
                raise UnknownOperation(f"unknown operation group {op!r}; known: {', '.join(OP_GROUPS)}")
            out.extend(OP_GROUPS[op])
        else:
            out.append(op)
    return tuple(dict.fromkeys(out))


def forbidden_source_names(ops) -> frozenset[str]:
    """Dotted names whose use in source breaks the rule: its functions, ``torch.ops.aten.X`` for
    its aten operators, and the torch module classes built on them."""
    names = expand(ops)
    out = {n for n in names if not n.startswith("aten.")}
    out |= {f"torch.ops.{n}" for n in names if n.startswith("aten.")}
    out |= {cls for cls, calls in CLASS_CALLS.items() if set(calls) & set(names)}
    return frozenset(out)


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    what: str  # "torch.nn.LayerNorm" or "a dynamic lookup getattr(torch.nn.functional, ...)"

    def describe(self) -> str:
        return f"{self.file}, line {self.line}: {self.what}"


def scan(path: Path, name: str, forbidden: frozenset[str]) -> list[Finding]:
    """What ``path`` (shown as ``name``) uses of ``forbidden``, and its dynamic lookups on torch."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []  # the tests that import it fail with the syntax error
    return _Scanner(name, forbidden).run(tree)


class _Scanner(ast.NodeVisitor):
    def __init__(self, name: str, forbidden: frozenset[str]):
        self.name, self.forbidden = name, forbidden
        self.aliases: dict[str, str] = {}
        self.findings: list[Finding] = []

    def run(self, tree: ast.AST) -> list[Finding]:
        for node in ast.walk(tree):  # imports first, wherever they are
            if isinstance(node, ast.Import):
                for a in node.names:
                    self.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        try:
            self.visit(tree)
        except RecursionError:
            self.findings.append(Finding(self.name, 1, "code nested too deeply to be read"))
        return self.findings

    def dotted(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def _hit(self, node: ast.AST, what: str) -> None:
        self.findings.append(Finding(self.name, getattr(node, "lineno", 0), what))

    def _check_name(self, node: ast.AST) -> bool:
        full = self.dotted(node)
        if full is None:
            return False
        if full in self.forbidden or _normalise(full) in self.forbidden:
            self._hit(node, f"uses {full}")
            return True
        return False

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Load) and self._check_name(node):
            return
        if node.attr == "__dict__" and _is_torch(self.dotted(node.value)):
            self._hit(node, f"a dynamic lookup {self.dotted(node.value)}.__dict__")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._check_name(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in DYNAMIC_BUILTINS and func.id not in self.aliases:
            self._hit(node, f"dynamic code ({func.id}(...)) the grader cannot check against the rule")
        elif isinstance(func, ast.Name) and func.id in ("getattr", "vars") and node.args:
            target = self.dotted(node.args[0])
            if _is_torch(target):
                attr = node.args[1] if func.id == "getattr" and len(node.args) > 1 else None
                if isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                    full = f"{target}.{attr.value}"
                    if full in self.forbidden or _normalise(full) in self.forbidden:
                        self._hit(node, f"uses {full}")
                else:
                    self._hit(node, f"a dynamic lookup {func.id}({target}, ...) the grader cannot check")
        full = self.dotted(func)
        if full and full.split(".")[0] in DYNAMIC_MODULES:
            self._hit(node, f"dynamic code ({full}(...)) the grader cannot check against the rule")
        self.generic_visit(node)


def _is_torch(dotted: str | None) -> bool:
    return bool(dotted) and (dotted == "torch" or dotted.startswith("torch."))


def _normalise(dotted: str) -> str:
    """``torch.nn.modules.normalization.LayerNorm`` and ``torch.nn.LayerNorm`` name one class;
    ``torch.nn.functional`` is often reached as ``torch.functional``: the public spelling."""
    parts = dotted.split(".")
    if len(parts) > 3 and parts[:3] == ["torch", "nn", "modules"]:
        return "torch.nn." + parts[-1]
    return dotted


def staged_findings(assignment, staged) -> dict[str, list[Finding]]:
    """{rule name: findings} over the staged submission's module files (and the packages they
    sit in), for every rule of the assignment."""
    files: dict[str, Path] = {}
    for rel in staged.found.values():
        path = staged.path / rel
        files[rel] = path
        package = path.parent
        if package != staged.path and (package / "__init__.py").is_file():
            for extra in package.rglob("*.py"):
                files.setdefault(extra.relative_to(staged.path).as_posix(), extra)
    out: dict[str, list[Finding]] = {}
    for rule in assignment.rules:
        found: list[Finding] = []
        if rule.forbid:
            forbidden = forbidden_source_names(rule.forbid)
            found += [f for name, path in sorted(files.items()) for f in scan(path, name, forbidden)]
        for where in rule.no_loops_in:
            file, _, qualname = where.partition(":")
            staged_file = _staged_file(staged, file)
            if staged_file is not None:
                found += loops_in(staged_file, file, qualname, rule.allow_loops_over)
        if found:
            out[rule.name] = found
    return out


def _staged_file(staged, name: str) -> Path | None:
    """The staged file for a rubric file name (a kept package's path, or the extracted notebook)."""
    for rel in staged.found.values():
        if Path(rel).name == name or Path(rel).stem == Path(name).stem:
            return staged.path / rel
    return None


def loops_in(path: Path, shown: str, qualname: str, allowed: tuple[str, ...] = ()) -> list[Finding]:
    """Python loops in the function ``qualname`` (``Class.method``) of ``path``, and in the
    functions of the same file it calls (``helper(...)``, ``self.helper(...)``): ``for``,
    ``while``, comprehensions, ``map``/``filter`` and recursion, except loops over an attribute in
    ``allowed`` (``self.blocks``) or over a written-out tuple, list or ``range(<number>)``. The
    test process counts operations too; this is what the parent reads in the source."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    parts = qualname.split(".")
    func = _find_function(tree, parts)
    if func is None:
        return []
    cls = _find_class(tree, parts[0]) if len(parts) > 1 else None
    found, todo, seen = [], [(func, qualname)], set()
    while todo:
        current, name = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for node in ast.walk(current):
            what = _loop_kind(node, allowed, current)
            if what:
                via = "" if current is func else f" (through {name})"
                found.append(Finding(shown, getattr(node, "lineno", current.lineno), f"{what} in {qualname}{via}"))
            if isinstance(node, ast.Call):
                callee = _callee(tree, cls, node.func)
                if callee is not None:
                    todo.append((callee, callee.name))
    return found


def _loop_kind(node: ast.AST, allowed: tuple[str, ...], func) -> str | None:
    if isinstance(node, (ast.For, ast.AsyncFor)):
        return None if ast.unparse(node.iter) in allowed or _fixed(node.iter) else "a for loop"
    if isinstance(node, ast.While):
        return "a while loop"
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        return None if all(_fixed(g.iter) for g in node.generators) else "a comprehension (a loop)"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("map", "filter"):
        return f"{node.func.id}(...) (a loop)"
    if isinstance(node, ast.Call) and ast.unparse(node.func) in (func.name, f"self.{func.name}"):
        return "a call of itself (a loop by recursion)"
    return None


def _callee(tree: ast.Module, cls, func: ast.AST):
    """The function of this file a call reaches: ``name(...)`` (a top-level function) or
    ``self.name(...)`` (a method of the same class)."""
    if isinstance(func, ast.Name):
        return next(
            (n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == func.id), None
        )
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self" and cls:
        return next(
            (n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == func.attr),
            None,
        )
    return None


def _find_class(tree: ast.Module, name: str):
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)


def _fixed(iterable: ast.AST) -> bool:
    """A loop over a written-out tuple or list, or over range(<a number>): its length does not
    depend on the data (not a loop over heads, batch or positions)."""
    if isinstance(iterable, (ast.Tuple, ast.List)):
        return True
    return (
        isinstance(iterable, ast.Call)
        and isinstance(iterable.func, ast.Name)
        and iterable.func.id == "range"
        and all(isinstance(a, ast.Constant) for a in iterable.args)
    )


def _find_function(tree: ast.AST, parts: list[str]):
    scope = tree.body
    for part in parts:
        match = next(
            (
                n
                for n in scope
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == part
            ),
            None,
        )
        if match is None:
            return None
        scope = match.body
        node = match
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
