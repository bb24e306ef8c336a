"""gradescope-utils compatibility: suites written for Gradescope run unchanged.

``@weight``, ``@number``, ``@visibility``, ``@tags``, ``@hide_errors``, ``@partial_credit`` and
``@leaderboard`` store their values on the test function. In the test process the plugin reads
them and sends them with each result; the grading parent takes from them only what may make a
result more restrictive (a stricter visibility, hidden errors) and, for tests the rubric lists as
``child_judged``, the partial credit and tags. Points and questions always come from the rubric.

``@partial_credit`` / ``@leaderboard`` tests run with setters of our own: gradescope-utils'
setters are Python functions that store on the test function, where student code can reach them
(swap their ``__code__``, set ``__score__``). Ours are a list's ``append``, a C method with no code
to swap, and the value the test passed last counts.
"""

from __future__ import annotations

import inspect
import os

import pytest

_DECORATORS_FILE = os.path.join("gradescope_utils", "autograder_utils", "decorators.py")
_SETTERS = {"set_score": "score", "set_leaderboard_value": "leaderboard_value"}
_SET_VALUES = pytest.StashKey[dict]()
_DUNDERS = {
    "__weight__": "weight",
    "__number__": "number",
    "__visibility__": "visibility",
    "__hide_errors__": "hide_errors",
    "__tags__": "tags",
    "__score__": "score",
    "__leaderboard_column__": "leaderboard_column",
    "__leaderboard_sort_order__": "leaderboard_order",
    "__leaderboard_value__": "leaderboard_value",
}


def run_with_own_setters(pyfuncitem: pytest.Function) -> bool | None:
    """``pytest_pyfunc_call`` for decorated tests: call the undecorated function with our
    setters; None for any other test (pytest calls it as usual)."""
    fn = pyfuncitem.obj
    inner = fn
    while getattr(getattr(inner, "__code__", None), "co_filename", "").endswith(_DECORATORS_FILE) and hasattr(
        inner, "__wrapped__"
    ):
        inner = inner.__wrapped__
    if inner is fn:
        return None
    if inspect.ismethod(fn):
        inner = inner.__get__(fn.__self__)
    params = inspect.signature(inner).parameters
    kwargs = {arg: pyfuncitem.funcargs[arg] for arg in pyfuncitem._fixtureinfo.argnames}
    values: dict = {}
    for setter, key in _SETTERS.items():
        if setter in params:
            values[key] = []
            kwargs[setter] = values[key].append
    pyfuncitem.stash[_SET_VALUES] = values
    inner(**kwargs)
    return True


def reset_dunders(item: pytest.Item) -> None:
    """``set_score`` / ``set_leaderboard_value`` store on the function object and are never reset
    by gradescope-utils: a stale value would leak into the next case of a parametrised test."""
    fn = getattr(item, "obj", None)
    for name in ("__score__", "__leaderboard_value__"):
        for target in (fn, getattr(fn, "__func__", None)):
            if target is not None and name in getattr(target, "__dict__", {}):
                try:
                    delattr(target, name)
                except AttributeError:
                    pass


def decorator_values(item: pytest.Item) -> dict:
    """The gradescope-utils values of a test, as the result event carries them."""
    fn = getattr(item, "obj", None)
    out: dict = {}
    set_values = item.stash.get(_SET_VALUES, None)
    for dunder, key in _DUNDERS.items():
        if set_values is not None and key in _SETTERS.values():
            given = set_values.get(key)
            value = given[-1] if given else None  # what the test itself passed last
        else:
            value = getattr(fn, dunder, None)
        if value is None:
            continue
        if key == "tags":
            value = [str(v) for v in value]
        elif key in ("weight", "score", "leaderboard_value"):
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
        elif key != "hide_errors":
            value = str(value)
        out[key] = value
    return out
