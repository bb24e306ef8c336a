"""Notice, and undo, a submission replacing the functions the tests and the grader rely on.

Before any student code runs, the plugin takes a fingerprint of the comparison and reporting
machinery: the functions and classes of ``builtins``, ``math``, ``torch`` (top level,
``torch.testing``, ``torch.Tensor``'s methods), ``numpy`` (top level, ``numpy.testing``),
``pytest``, ``_pytest``, ``pluggy``, ``gradescope_utils`` and ``grader``. After a student
module is imported and after every test, the fingerprint is compared: anything replaced
(``torch.allclose = lambda *a, **k: True``, a patched ``TestReport``, a rewritten plugin
function, a swapped ``__code__``) is put back and reported.

This keeps generic patches from changing verdicts that are computed inside the test process
(property tests). Values checked with ``snapshot.check`` do not depend on it: those are
compared by the parent, out of the submission's reach.
"""

from __future__ import annotations

import operator
import os
import sys
import sysconfig
from types import FunctionType, ModuleType

PREFIXES = ("_pytest", "pytest", "pluggy", "gradescope_utils", "grader")
EXTRA_MODULES = (
    "builtins",
    "math",
    "operator",
    "functools",
    "torch",
    "torch.testing",
    "torch.nn.functional",
    "numpy",
    "numpy.testing",
    "json",
    "os",
    "signal",
)
CLASSES = ("torch.Tensor",)
_MISSING = object()


def _watched_modules() -> list[ModuleType]:
    mods = []
    for name, mod in list(sys.modules.items()):
        if not isinstance(mod, ModuleType):
            continue
        if name in EXTRA_MODULES or name.split(".")[0] in PREFIXES:
            mods.append(mod)
    return mods


def _code(value):
    return value.__code__ if isinstance(value, FunctionType) else None


def _namespaces() -> list[tuple[str, object, dict]]:
    """(label, owner, namespace dict) for each watched module, its classes, and extra classes."""
    spaces: list[tuple[str, object, dict]] = []
    for mod in _watched_modules():
        ns = vars(mod)
        spaces.append((mod.__name__, mod, ns))
        if mod.__name__.split(".")[0] in PREFIXES:
            for name, value in list(ns.items()):
                if isinstance(value, type) and getattr(value, "__module__", None) == mod.__name__:
                    spaces.append((f"{mod.__name__}.{name}", value, dict(vars(value))))
    for dotted in CLASSES:
        mod_name, _, cls_name = dotted.rpartition(".")
        cls = getattr(sys.modules.get(mod_name), cls_name, None)
        if isinstance(cls, type):
            spaces.append((dotted, cls, dict(vars(cls))))
    return spaces


class Fingerprint:
    """The watched callables as they were when taken; ``restore`` undoes later replacements.

    ``restore`` runs before and after every test and after every access to a student module,
    over some 7,000 entries: it first compares them all at C speed (one ``itemgetter`` per
    namespace, ``is not`` mapped over the tuples) and walks them one by one only when something
    differs."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], tuple[str, object, object, object]] = {}
        self._class_names: dict[int, tuple[str, type, set[str]]] = {}
        self._fast: tuple[list, list, tuple, list] | None = None
        self.extend()

    def extend(self) -> None:
        """Add what was imported since (never overwrites what is already recorded)."""
        for label, owner, ns in _namespaces():
            if isinstance(owner, type) and id(owner) not in self._class_names:
                self._class_names[id(owner)] = (label, owner, set(ns))
            for name, value in list(ns.items()):
                if callable(value) or isinstance(value, (staticmethod, classmethod, property)):
                    key = (id(owner), name)
                    if key not in self._entries:
                        self._entries[key] = (label, owner, value, _code(value))
        self._fast = None

    def _compile(self) -> tuple[list, list, tuple, list]:
        groups: dict[int, tuple[object, list[str], list[object]]] = {}
        functions, codes = [], []
        for (owner_id, name), (_label, owner, value, code) in self._entries.items():
            group = groups.setdefault(owner_id, (owner, [], []))
            group[1].append(name)
            group[2].append(value)
            if code is not None:
                functions.append(value)
                codes.append(code)
        checks = [
            (owner, operator.itemgetter(*names) if len(names) > 1 else _single(names[0]), tuple(values))
            for owner, names, values in groups.values()
        ]
        classes = [(cls, frozenset(names)) for _label, cls, names in self._class_names.values()]
        return checks, classes, tuple(codes), functions

    def _unchanged(self) -> bool:
        if self._fast is None:
            self._fast = self._compile()
        checks, classes, codes, functions = self._fast
        for owner, get, values in checks:
            try:
                current = get(vars(owner))
            except KeyError:
                return False
            if any(map(operator.is_not, current, values)):
                return False
        if any(map(operator.is_not, map(_CODE_OF, functions), codes)):
            return False
        for cls, names in classes:
            ns = vars(cls)
            if any(_watched_kind(ns[n]) for n in ns.keys() - names):
                return False
        return True

    def restore(self) -> list[str]:
        """Put back every replaced or deleted entry (and swapped ``__code__``); return their names."""
        if self._unchanged():
            return []
        self._fast = None
        changed = []
        for key, (label, owner, value, code) in list(self._entries.items()):
            current = _lookup(owner, name := key[1])
            if current is not value and _library_wrapper(current, value):
                self._entries[key] = (label, owner, current, _code(current))  # e.g. torch._dynamo's
                continue
            if current is not value:
                try:
                    _assign(owner, name, value)
                except (AttributeError, TypeError):
                    continue
                changed.append(f"{label}.{name}")
            if code is not None and value.__code__ is not code:
                value.__code__ = code
                changed.append(f"{label}.{name}.__code__")
        for label, cls, names in self._class_names.values():
            for name in [n for n in vars(cls) if n not in names]:
                value = vars(cls)[name]
                if _watched_kind(value):
                    try:
                        delattr(cls, name)  # a method added to shadow an inherited one
                    except (AttributeError, TypeError):
                        continue
                    changed.append(f"{label}.{name}")
        return sorted(set(changed))


_LIBRARY_DIRS = tuple(
    {
        os.path.realpath(p) + os.sep
        for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platlib"])
    }
)


def _library_wrapper(current, original) -> bool:
    """A library's own wrapper of the original (torch._dynamo wraps ``torch.manual_seed`` when
    it is first imported): it wraps the original and its code lives in the installed packages."""
    if getattr(current, "__wrapped__", None) is not original:
        return False
    code = _code(current)
    filename = os.path.realpath(code.co_filename) if code is not None else ""
    return filename.startswith(_LIBRARY_DIRS)


def _watched_kind(value) -> bool:
    return callable(value) or isinstance(value, (staticmethod, classmethod, property))


def _single(name: str):
    return lambda ns: (ns[name],)


_CODE_OF = operator.attrgetter("__code__")


def _lookup(owner, name):
    return vars(owner).get(name, _MISSING)


def _assign(owner, name, value) -> None:
    if isinstance(owner, ModuleType):
        vars(owner)[name] = value
    else:
        setattr(owner, name, value)


class HookFingerprint:
    """pytest's plugin registry and every hook's implementations, as they were when taken.

    A submission that finds the plugin manager (through ``gc``) and registers a plugin or a
    hook wrapper of its own, or swaps the function behind a registered hook, is undone here.
    """

    def __init__(self, pluginmanager) -> None:
        self.pm = pluginmanager
        self.plugins = dict(pluginmanager._name2plugin)
        self.inner = vars(pluginmanager).get("_inner_hookexec")
        self.callers = {}
        for name, caller in vars(pluginmanager.hook).items():
            impls = getattr(caller, "_hookimpls", None)
            if isinstance(impls, list):
                self.callers[name] = (caller, list(impls), [(impl, impl.function) for impl in impls])

    def restore(self) -> list[str]:
        changed = []
        pm = self.pm
        if pm._name2plugin != self.plugins:
            pm._name2plugin.clear()
            pm._name2plugin.update(self.plugins)
            changed.append("pytest's plugin registry")
        if self.inner is not None and vars(pm).get("_inner_hookexec") is not self.inner:
            pm._inner_hookexec = self.inner
            changed.append("pluggy's hook executor")
        for name, (caller, impls, functions) in self.callers.items():
            if getattr(pm.hook, name, None) is not caller:
                setattr(pm.hook, name, caller)
                changed.append(f"hook {name}")
            if len(caller._hookimpls) != len(impls) or any(a is not b for a, b in zip(caller._hookimpls, impls)):
                caller._hookimpls[:] = impls
                changed.append(f"hook {name}")
            for impl, function in functions:
                if impl.function is not function:
                    impl.function = function
                    changed.append(f"hook {name}")
        return sorted(set(changed))
