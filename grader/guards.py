"""Handout rules enforced at the dispatcher level, and operation counting.

A forbidden operation is caught where torch dispatches it, not by name patching: a
``TorchFunctionMode`` sees calls of torch functions however they were reached (an alias,
``getattr(F, "layer_" + "norm")``, a module's forward), and a ``TorchDispatchMode`` sees the
aten operators underneath (so ``torch.ops.aten.native_layer_norm`` is caught too). A violation
is recorded before the exception is raised, so student code that swallows the exception still
fails the test.
"""

from __future__ import annotations

import importlib
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from grader.rules import OP_GROUPS, expand


class ForbiddenOperation(RuntimeError):
    """Raised inside student code when it calls an operation a rule forbids."""


@dataclass
class Violation:
    rule: str
    message: str
    op: str

    def describe(self) -> str:
        return f"{self.message} (rule {self.rule}: your code called {self.op})"


@dataclass
class _Compiled:
    rule: str
    message: str
    aten: frozenset[str]
    functions: dict[int, str] = field(default_factory=dict)  # id(callable) -> dotted name
    function_names: frozenset[str] = frozenset()


def _resolve(dotted: str):
    module_name, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return None


def _compile(rule: str, message: str, ops) -> _Compiled:
    names = expand(ops)
    aten = frozenset(n for n in names if n.startswith("aten."))
    functions: dict[int, str] = {}
    short_names = set()
    for n in names:
        if n.startswith("aten."):
            continue
        obj = _resolve(n)
        if obj is not None:
            functions[id(obj)] = n
        short_names.add(n.rpartition(".")[2])
    return _Compiled(rule, message, aten, functions, frozenset(short_names))


class _Recorder:
    def __init__(self, compiled: list[_Compiled]):
        self.compiled = compiled
        self.violations: list[Violation] = []

    def hit(self, c: _Compiled, op: str) -> None:
        v = Violation(c.rule, c.message, op)
        self.violations.append(v)
        raise ForbiddenOperation(v.describe())


class _FunctionGuard(TorchFunctionMode):
    def __init__(self, recorder: _Recorder):
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        for c in self.recorder.compiled:
            name = c.functions.get(id(func))
            if name is None and getattr(func, "__name__", None) in c.function_names and _is_torch_callable(func):
                name = f"{getattr(func, '__module__', 'torch')}.{func.__name__}"
            if name is not None:
                self.recorder.hit(c, name)
        return func(*args, **(kwargs or {}))


class _DispatchGuard(TorchDispatchMode):
    def __init__(self, recorder: _Recorder):
        super().__init__()
        self.recorder = recorder

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = str(func.overloadpacket)  # e.g. "aten.native_layer_norm"
        for c in self.recorder.compiled:
            if packet in c.aten:
                self.recorder.hit(c, packet)
        return func(*args, **(kwargs or {}))


def _is_torch_callable(func) -> bool:
    module = getattr(func, "__module__", "") or ""
    return module.startswith("torch") or module == "" or "builtin" in type(func).__name__


@contextmanager
def forbid(rules: list[tuple[str, str, tuple[str, ...]]]):
    """Forbid operations while the block runs. ``rules``: (name, message, ops) triples.

    Yields the recorder; ``recorder.violations`` lists what was caught even if the exception
    was swallowed by the code under test.
    """
    recorder = _Recorder([_compile(n, m, o) for n, m, o in rules])
    with ExitStack() as stack:
        if recorder.compiled:
            stack.enter_context(_FunctionGuard(recorder))
            stack.enter_context(_DispatchGuard(recorder))
        yield recorder


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn, *args, **kwargs) -> tuple[int, Counter]:
    """Run ``fn(*args, **kwargs)`` and count the aten operations it dispatches."""
    counter = _Counter()
    with counter:
        fn(*args, **kwargs)
    return sum(counter.ops.values()), counter.ops


__all__ = ["OP_GROUPS", "ForbiddenOperation", "Violation", "count_ops", "expand", "forbid"]
