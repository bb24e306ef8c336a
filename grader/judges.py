"""Rules the grading parent evaluates itself, on the raw values a test sends it.

A value test proves itself by matching a recorded snapshot. A property (causality, a sampling
distribution, no Python loop, the loss going down, two runs agreeing) cannot be recorded as one
value, and a verdict formed in the test process is worth nothing: that process runs student code,
which can rewrite anything in it. So a suite sends the observations and names a rule::

    snapshot.check("logits", model(tokens))                     # the value anchor
    snapshot.judge("logits_future_changed", model(changed), "prefix_unchanged",
                   key="logits", upto=5)                          # the property

``lmgrade record`` stores the rule's name and parameters with the reference's value (the reference
must satisfy its own rules); at grading, the parent applies the *recorded* rule to what the child
sent, never one the child names. Rules see only plain values (numpy arrays, lists, dicts, numbers,
strings), the values the same test sent earlier (``ev.earlier(key)``), the reference's value
(``ev.expected``) and the recorded parameters. They return the problems found, each a sentence a
student can act on; an empty list passes. A rule must never put an expected value of a hidden
test in a message (``ev.reveal`` is true only for public tests).

Generic rules are defined here. An assignment adds its own in ``test_suites/<id>/judges.py``:
trusted code of the suite, loaded by the parent from its path; it may import numpy and this module,
never torch or the submission (the parent checks).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Evidence", "JudgeError", "RuleBook", "as_array", "load_rulebook", "rule"]


class JudgeError(ValueError):
    """A rule cannot be applied as recorded (unknown name, bad parameters): a suite bug."""


@dataclass(frozen=True)
class Evidence:
    """What a rule sees: the value the test sent under ``key`` and its context."""

    key: str
    value: Any
    params: Mapping[str, Any]
    expected: Any = None
    seen: Mapping[str, Any] = field(default_factory=dict)
    reveal: bool = False

    def earlier(self, key: str) -> Any:
        """The value this test sent earlier under ``key``."""
        if key not in self.seen:
            raise _Missing(f"`{self.key}` is judged against `{key}`, which the test did not send before it")
        return self.seen[key]

    def param(self, name: str, default: Any = ...) -> Any:
        if name in self.params:
            return self.params[name]
        if default is ...:
            raise JudgeError(f"rule for `{self.key}` needs the parameter {name!r}")
        return default


class _Missing(Exception):
    """An observation a rule depends on was not sent: the rule fails with this message."""


Rule = Callable[[Evidence], "list[str] | str | None"]
_GENERIC: dict[str, Rule] = {}
_REGISTRY_STACK: list[dict[str, Rule]] = [_GENERIC]
# A suite's judges.py registers its rules into the top of the stack while it executes: two threads
# loading at once (a batch grades several submissions in threads) would register into each other's
# book. Loading is serialised, and each file's book kept while the file is unchanged.
_LOAD_LOCK = threading.Lock()
_LOADED: dict[tuple[str, int, int], dict[str, Rule]] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    """Register ``fn`` as the rule ``name`` (in this module, or in the suite's judges.py)."""

    def register(fn: Rule) -> Rule:
        _REGISTRY_STACK[-1][name] = fn
        return fn

    return register


class RuleBook:
    """The rules one assignment may use: the generic ones and its suite's own."""

    def __init__(self, extra: Mapping[str, Rule] | None = None):
        self.rules: dict[str, Rule] = {**_GENERIC, **(extra or {})}

    def __contains__(self, name: str) -> bool:
        return name in self.rules

    def evaluate(self, name: str, ev: Evidence) -> list[str]:
        fn = self.rules.get(name)
        if fn is None:
            return [f"`{ev.key}`: the grader has no rule {name!r} (re-record the snapshots)"]
        try:
            out = fn(ev)
        except _Missing as err:
            return [str(err)]
        except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as err:
            # a malformed value from the test process (wrong kind, wrong shape) is the
            # submission's problem, reported as such; the rule itself is trusted code
            return [f"`{ev.key}`: the value sent cannot be judged by {name!r} ({type(err).__name__}: {err})"]
        if not out:
            return []
        return [out] if isinstance(out, str) else [str(p) for p in out]


def load_rulebook(suite_dir: Path | None) -> RuleBook:
    """The generic rules plus ``suite_dir/judges.py`` if the suite has one."""
    path = Path(suite_dir) / "judges.py" if suite_dir is not None else None
    if path is None or not path.is_file():
        return RuleBook()
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _exec_judges(path)
        return RuleBook(dict(_LOADED[key]))


def _exec_judges(path: Path) -> dict[str, Rule]:
    extra: dict[str, Rule] = {}
    had_torch = "torch" in sys.modules
    name = f"_lmgrade_judges_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise JudgeError(f"{path}: cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    _REGISTRY_STACK.append(extra)
    try:
        spec.loader.exec_module(module)
    finally:
        _REGISTRY_STACK.pop()
    if not had_torch and "torch" in sys.modules:
        raise JudgeError(f"{path} imports torch: the grading parent's rules use numpy only")
    return extra


# -- helpers for rules ----------------------------------------------------------------------------


def as_array(value: Any, what: str, *, dtype=None, ndim: int | None = None) -> np.ndarray:
    """``value`` as an array (a list of numbers becomes one); ValueError naming ``what``."""
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (list, tuple, int, float, bool)):
        arr = np.asarray(value)
        if arr.dtype == object:
            raise ValueError(f"{what} is not a rectangular array of numbers")
    else:
        raise ValueError(f"{what} is {type(value).__name__}, not an array")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{what} has {arr.ndim} dimensions, expected {ndim}")
    return arr.astype(dtype) if dtype is not None else arr


def _same_shape(a: np.ndarray, b: np.ndarray, what_a: str, what_b: str) -> str | None:
    if a.shape != b.shape:
        return f"{what_a} has shape {tuple(a.shape)} but {what_b} has shape {tuple(b.shape)}"
    return None


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.abs(a64 - b64) <= atol + rtol * np.abs(b64)
    return ok & np.isfinite(a64) & np.isfinite(b64)  # NaN or inf never counts as close


# -- generic rules --------------------------------------------------------------------------------


@rule("same_as")
def same_as(ev: Evidence) -> list[str]:
    """Equal (within ``rtol``/``atol``, default exact) to the earlier value ``key``:
    reproducibility, a round trip, a merged layer computing what the un-merged one did."""
    other_key = ev.param("key")
    a, b = as_array(ev.value, f"`{ev.key}`"), as_array(ev.earlier(other_key), f"`{other_key}`")
    what = ev.param("what", f"`{ev.key}` and `{other_key}`")
    if (bad := _same_shape(a, b, f"`{ev.key}`", f"`{other_key}`")) is not None:
        return [bad]
    ok = _close(a, b, float(ev.param("rtol", 0.0)), float(ev.param("atol", 0.0)))
    if not ok.all():
        return [f"{what} differ at {int((~ok).sum())} of {ok.size} entries"]
    return []


@rule("differs_from")
def differs_from(ev: Evidence) -> list[str]:
    """Not equal to the earlier value ``key`` (different seeds, different temperatures)."""
    other_key = ev.param("key")
    a, b = as_array(ev.value, f"`{ev.key}`"), as_array(ev.earlier(other_key), f"`{other_key}`")
    if a.shape == b.shape and _close(a, b, 0.0, float(ev.param("atol", 0.0))).all():
        return [ev.param("what", f"`{ev.key}` equals `{other_key}`")]
    return []


@rule("prefix_unchanged")
def prefix_unchanged(ev: Evidence) -> list[str]:
    """Causality: positions ``0 .. upto`` along ``axis`` (default 1) equal those of the earlier
    value ``key``, computed from the same inputs with only later positions changed."""
    other_key = ev.param("key")
    a, b = as_array(ev.value, f"`{ev.key}`"), as_array(ev.earlier(other_key), f"`{other_key}`")
    if (bad := _same_shape(a, b, f"`{ev.key}`", f"`{other_key}`")) is not None:
        return [bad]
    upto, axis = int(ev.param("upto")), int(ev.param("axis", 1))
    head = [slice(None)] * a.ndim
    head[axis] = slice(0, upto + 1)
    ok = _close(a[tuple(head)], b[tuple(head)], 0.0, float(ev.param("atol", 1e-5)))
    if not ok.all():
        moved = np.moveaxis(~ok, axis, 0).reshape(upto + 1, -1).any(axis=1)
        first = int(np.argmax(moved))
        return [
            f"not causal: changing the inputs after position {upto} changed the output at position "
            f"{first}; attention must not look at later positions"
        ]
    return []


@rule("loss_decreases")
def loss_decreases(ev: Evidence) -> list[str]:
    """A list of losses: finite, and the mean of the last quarter below ``factor`` times the
    first quarter's (default 0.9)."""
    losses = as_array(ev.value, f"`{ev.key}`", dtype=np.float64).reshape(-1)
    if losses.size < int(ev.param("min_steps", 4)):
        return [f"`{ev.key}`: {losses.size} losses recorded, expected at least {int(ev.param('min_steps', 4))}"]
    if not np.isfinite(losses).all():
        return [f"{ev.param('what', 'training')} produced a NaN or infinite loss"]
    q = max(1, losses.size // 4)
    first, last = losses[:q].mean(), losses[-q:].mean()
    factor = float(ev.param("factor", 0.9))
    if not last < factor * first:
        return [
            f"{ev.param('what', 'training')} did not lower the loss: {first:.4g} at the start, {last:.4g} at the end"
        ]
    return []


@rule("no_growth")
def no_growth(ev: Evidence) -> list[str]:
    """Operation counts at growing input sizes (``sizes``): each at least ``min_ops`` (real work
    was done) and the largest at most ``slack`` above the smallest (no Python loop)."""
    counts = [int(c) for c in as_array(ev.value, f"`{ev.key}`").reshape(-1)]
    sizes = list(ev.param("sizes"))
    if len(counts) != len(sizes):
        return [f"`{ev.key}`: {len(counts)} operation counts for {len(sizes)} input sizes"]
    min_ops = int(ev.param("min_ops", 1))
    idle = [n for n, c in zip(sizes, counts) if c < min_ops]
    if idle:
        return [
            f"{ev.param('what', 'the code')} ran {min(counts)} tensor operations at size {idle[0]}: "
            "nothing was computed (not implemented yet?)"
        ]
    if max(counts) - min(counts) > int(ev.param("slack", 0)):
        detail = ", ".join(f"{n}: {c} ops" for n, c in zip(sizes, counts))
        return [
            f"the number of tensor operations grows with {ev.param('over', 'the input size')} ({detail}): "
            f"{ev.param('rule_text', 'the handout asks for matrix operations without Python loops')}"
        ]
    return []


@rule("finite")
def finite(ev: Evidence) -> list[str]:
    arr = as_array(ev.value, f"`{ev.key}`", dtype=np.float64)
    bad = int((~np.isfinite(arr)).sum())
    return [f"`{ev.key}` has {bad} NaN or infinite entries"] if bad else []


@rule("bounds")
def bounds(ev: Evidence) -> list[str]:
    """Every entry within [``low``, ``high``] (either may be omitted) and finite."""
    arr = as_array(ev.value, f"`{ev.key}`", dtype=np.float64)
    low, high = ev.param("low", None), ev.param("high", None)
    ok = np.isfinite(arr)
    if low is not None:
        ok &= arr >= float(low)
    if high is not None:
        ok &= arr <= float(high)
    if not ok.all():
        rng = f"[{'-inf' if low is None else f'{float(low):g}'}, {'inf' if high is None else f'{float(high):g}'}]"
        return [f"`{ev.key}`: {int((~ok).sum())} of {ok.size} entries are outside {rng}"]
    return []


@rule("shape")
def shape(ev: Evidence) -> list[str]:
    """An array of the recorded shape and dtype kind, whatever its values (random outputs)."""
    if not isinstance(ev.value, np.ndarray):
        return [f"`{ev.key}`: expected a tensor, got {type(ev.value).__name__}"]
    want = ev.expected if isinstance(ev.expected, np.ndarray) else None
    want_shape = tuple(ev.param("shape", want.shape if want is not None else ev.value.shape))
    if tuple(ev.value.shape) != want_shape:
        return [f"`{ev.key}` has shape {tuple(ev.value.shape)}, expected {want_shape}"]
    if want is not None and want.dtype.kind != ev.value.dtype.kind:
        return [f"`{ev.key}` has dtype {ev.value.dtype}, expected a {want.dtype} tensor"]
    return []


@rule("uniform_counts")
def uniform_counts(ev: Evidence) -> list[str]:
    """Counts per category: every category seen (unless ``allow_zero``) and a chi-square
    statistic against uniform below ``max_chi2``."""
    counts = as_array(ev.value, f"`{ev.key}`", dtype=np.float64).reshape(-1)
    if counts.size < 2 or counts.sum() <= 0:
        return [f"`{ev.key}`: no draws were counted"]
    missing = np.flatnonzero(counts == 0)
    if missing.size and not ev.param("allow_zero", False):
        return [f"{ev.param('what', 'categories')} {missing[:8].tolist()} never occurred in {int(counts.sum())} draws"]
    expected = counts.sum() / counts.size
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    if chi2 >= float(ev.param("max_chi2")):
        return [
            f"{ev.param('what', 'categories')} are far from uniform (chi-square {chi2:.0f} with "
            f"{counts.size - 1} degrees of freedom)"
        ]
    return []
