"""docs/engine.md's list of what suites call names real functions with their real signatures
(parameter names, kinds and defaults)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "engine.md"
KINDS = inspect.Parameter


def _documented() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("What the suites call, with their signatures", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines() if line.strip()]


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _doc_params(args: str) -> list[tuple[str, str, str | None]]:
    """(name, kind, default source) from a documented argument list."""
    a = ast.parse(f"def f({args}): pass").body[0].args
    out = []
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + [ast.unparse(d) for d in a.defaults]
    for i, (arg, default) in enumerate(zip(positional, defaults)):
        out.append((arg.arg, "POSITIONAL_ONLY" if i < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD", default))
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", None))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        out.append((arg.arg, "KEYWORD_ONLY", None if default is None else ast.unparse(default)))
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", None))
    return out


def _code_params(obj) -> list[tuple[str, str, str | None]]:
    out = []
    for p in inspect.signature(obj).parameters.values():
        default = None if p.default is KINDS.empty else repr(p.default)
        out.append((p.name, p.kind.name, default))
    return out


@pytest.mark.parametrize("line", _documented())
def test_documented_signature_is_the_codes(line):
    name, args = re.fullmatch(r"([\w.]+)\((.*)\)", line).groups()
    assert _doc_params(args) == _code_params(_resolve(name)), name
