"""Compare a checked value against its recorded snapshot (numpy only; runs in the parent).

The result is a list of problems, each a sentence a student can act on: which key, then the
kind/shape/dtype mismatch first, then how the values differ (how many entries, max error,
where). Unless ``reveal`` is set (public tests), no message contains an expected value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grader.values import Tree, describe

MAX_PROBLEMS = 3


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    def __str__(self) -> str:
        if self.rtol == 0 and self.atol == 0:
            return "exact"
        return f"atol {self.atol:g} + rtol {self.rtol:g} x |expected|"


def compare(
    expected: Tree,
    expected_arrays: dict[str, np.ndarray],
    actual: Tree,
    actual_arrays: dict[str, np.ndarray],
    *,
    tol: Tolerance,
    mask: np.ndarray | None = None,
    reveal: bool = False,
    path: str = "value",
    dtypes: tuple[str, ...] | None = None,
) -> list[str]:
    """Problems comparing ``actual`` with ``expected``. A tensor's dtype must equal the expected
    one exactly, unless ``dtypes`` lists the ones the test accepts."""
    ctx = _Ctx(expected_arrays, actual_arrays, tol, reveal, dtypes)
    ctx.visit(expected, actual, path, mask)
    return ctx.problems[:MAX_PROBLEMS]


class _Ctx:
    def __init__(self, exp_arrays, act_arrays, tol: Tolerance, reveal: bool, dtypes: tuple[str, ...] | None = None):
        self.exp_arrays, self.act_arrays, self.tol, self.reveal = exp_arrays, act_arrays, tol, reveal
        self.dtypes = tuple(dtypes) if dtypes else None
        self.problems: list[str] = []

    def fail(self, msg: str) -> None:
        self.problems.append(msg)

    def visit(self, exp: Tree, act: Tree, path: str, mask) -> None:
        et, at = exp["t"], act["t"]
        if at == "none" and et != "none":  # a starter's `pass` body, or a missing `return`
            return self.fail(f"{path}: got None, expected {describe(exp)}: not implemented yet (or a missing return)?")
        if et in ("tensor", "array"):
            if at != et:
                if et == "tensor" and at == "array":
                    return self.fail(f"{path}: expected a torch tensor, got a numpy array")
                return self.fail(f"{path}: expected {describe(exp)}, got {describe(act)}")
            return self.visit_array(exp, act, path, mask)
        if et in ("list", "tuple"):
            if at not in ("list", "tuple"):
                return self.fail(f"{path}: expected {describe(exp)}, got {describe(act)}")
            if len(act["items"]) != len(exp["items"]):
                return self.fail(f"{path}: expected {len(exp['items'])} items, got {len(act['items'])}")
            for i, (e, a) in enumerate(zip(exp["items"], act["items"])):
                self.visit(e, a, f"{path}[{i}]", None)
            return None
        if et == "dict":
            return self.visit_dict(exp, act, path)
        if et in ("int", "float", "bool"):
            return self.visit_number(exp, act, path)
        if et in ("str", "none"):
            if at != et:
                return self.fail(f"{path}: expected {describe(exp)}, got {describe(act)}")
            if et == "str" and act["v"] != exp["v"]:
                got = _short(act["v"])
                msg = f"{path}: got the string {got}"
                msg += (
                    f", expected {_short(exp['v'])}"
                    if self.reveal
                    else f" (length {len(act['v'])}), which differs from the expected string (length {len(exp['v'])})"
                )
                return self.fail(msg)
            return None
        return self.fail(f"{path}: snapshot holds an unknown kind {et!r}; re-record the snapshots")

    def visit_dict(self, exp: Tree, act: Tree, path: str) -> None:
        if act["t"] != "dict":
            return self.fail(f"{path}: expected a dict, got {describe(act)}")
        exp_items = {_key_repr(k): v for k, v in exp["items"]}
        act_items = {_key_repr(k): v for k, v in act["items"]}
        missing = [k for k in exp_items if k not in act_items]
        extra = [k for k in act_items if k not in exp_items]
        if missing or extra:
            parts = []
            if missing:
                parts.append("missing keys " + ", ".join(missing))
            if extra:
                parts.append("unexpected keys " + ", ".join(extra))
            return self.fail(f"{path}: " + "; ".join(parts))
        for k, v in exp_items.items():
            self.visit(v, act_items[k], f"{path}[{k}]", None)
        return None

    def visit_number(self, exp: Tree, act: Tree, path: str) -> None:
        got = _as_number(act, self.act_arrays)
        if got is None:
            return self.fail(f"{path}: expected a number, got {describe(act)}")
        want = float(exp["v"]) if exp["t"] == "float" else exp["v"]
        if exp["t"] in ("int", "bool"):
            ok = got == want
        else:
            ok = _close(np.array([got], dtype=np.float64), np.array([want], dtype=np.float64), self.tol).all()
        if not ok:
            msg = f"{path}: got {got!r}"
            msg += f", expected {want!r}" if self.reveal else ", which differs from the expected value"
            if exp["t"] == "float":
                msg += f" (tolerance {self.tol})"
            self.fail(msg)
        return None

    def visit_array(self, exp: Tree, act: Tree, path: str, mask) -> None:
        want = self.exp_arrays[exp["ref"]]
        got = self.act_arrays[act["ref"]]
        if tuple(got.shape) != tuple(want.shape):
            return self.fail(f"{path}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        ek, gk = _kind(want.dtype), _kind(got.dtype)
        allowed = self.dtypes or (exp["dtype"],)
        if act["dtype"] not in allowed:
            accepted = exp["dtype"] if len(allowed) == 1 else " or ".join(allowed)
            return self.fail(f"{path}: dtype {act['dtype']}, expected {accepted}")
        if ek != gk:
            return self.fail(f"{path}: dtype {act['dtype']}, expected a {ek} dtype ({exp['dtype']})")
        sel = np.ones(want.shape, dtype=bool)
        if mask is not None:
            sel = np.broadcast_to(np.asarray(mask, dtype=bool), want.shape)
        if ek == "floating-point":
            bad = ~_close(got.astype(np.float64), want.astype(np.float64), self.tol)
        else:
            bad = got != want
        bad &= sel
        n_bad = int(bad.sum())
        if n_bad == 0:
            return None
        n = int(sel.sum())
        flat = int(
            np.argmax(
                np.where(bad, np.abs(got.astype(np.float64) - want.astype(np.float64)), -1).ravel()
                if ek == "floating-point"
                else bad.ravel()
            )
        )
        where = list(np.unravel_index(flat, want.shape)) if want.ndim else []
        where_s = "[" + ", ".join(str(int(i)) for i in where) + "]"
        if ek == "floating-point" and self.reveal:
            err = np.abs(got.astype(np.float64) - want.astype(np.float64))
            finite = np.isfinite(err) & sel
            max_err = float(err[finite].max()) if finite.any() else float("nan")
            msg = (
                f"{path}: values differ at {n_bad} of {n} entries ({100.0 * n_bad / max(n, 1):.1f}%); "
                f"max abs error {max_err:.3g} at {where_s}"
            )
            nonfinite = int((bad & ~np.isfinite(got)).sum())
            if nonfinite:
                msg += f"; {nonfinite} entries are NaN or inf"
            msg += f" (tolerance {self.tol})"
        elif ek == "floating-point":
            # A hidden test says how many entries differ and where the first is, never by how
            # much: an error magnitude, asked about one entry at a time, spells out the expected
            # values. NaN and inf count as differing wherever the reference is finite.
            first = int(np.argmax(bad.ravel()))
            where_s = (
                "[" + ", ".join(str(int(i)) for i in np.unravel_index(first, want.shape)) + "]" if want.ndim else "[]"
            )
            msg = (
                f"{path}: values differ at {n_bad} of {n} entries ({100.0 * n_bad / max(n, 1):.1f}%), "
                f"first at {where_s} (tolerance {self.tol})"
            )
        else:
            share = 100.0 * n_bad / max(n, 1)
            msg = f"{path}: values differ at {n_bad} of {n} entries ({share:.1f}%), first at {where_s}"
        if self.reveal:
            g = got[tuple(where)] if want.ndim else got[()]
            w = want[tuple(where)] if want.ndim else want[()]
            msg += f"; got {g.item()!r} there, expected {w.item()!r}"
        return self.fail(msg)


def _close(got: np.ndarray, want: np.ndarray, tol: Tolerance) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        close = np.abs(got - want) <= tol.atol + tol.rtol * np.abs(want)
    same_nonfinite = (np.isnan(got) & np.isnan(want)) | (
        np.isinf(got) & np.isinf(want) & (np.sign(got) == np.sign(want))
    )
    return close | same_nonfinite


def _kind(dtype: np.dtype) -> str:
    if dtype.kind == "f":
        return "floating-point"
    if dtype.kind in "iu":
        return "integer"
    if dtype.kind == "b":
        return "boolean"
    return dtype.kind


def _as_number(tree: Tree, arrays) -> float | int | bool | None:
    t = tree["t"]
    if t in ("int", "bool"):
        return tree["v"]
    if t == "float":
        return float(tree["v"])
    if t in ("tensor", "array") and int(np.prod(tree["shape"])) == 1:
        arr = arrays[tree["ref"]].reshape(-1)
        return arr[0].item()
    return None


def _key_repr(k: Tree) -> str:
    return repr(k.get("v")) if k["t"] in ("str", "int", "bool", "float") else repr(k)


def _short(s: str, n: int = 60) -> str:
    return repr(s if len(s) <= n else s[: n - 3] + "...")
