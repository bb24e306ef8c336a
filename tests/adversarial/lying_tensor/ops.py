"""Adversarial submission `lying_tensor` (tests/adversarial/lying_tensor): norm returns a tensor subclass that lies about its values.

Honest part: norm uses the unbiased variance (wrong); the rest is the reference.
The test fills in CHEAT ("on"; "off" grades the honest part alone), SCRATCH (a world-writable
folder where the attack leaves the pids of processes it starts, for the test to check) and
RESULTS (the results.json path, as well known to a student as Gradescope's
/autograder/results/results.json).
"""
import os
import sys
import time

import torch

from helper import OFFSET

CHEAT = "@@CHEAT@@" != "off"
SCRATCH = "@@SCRATCH@@"
RESULTS = "@@RESULTS@@"


def scaled(x, s):
    """Return x * s + OFFSET."""
    return x * s + OFFSET


def _honest_norm(x, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=True, keepdim=True)  # deliberately wrong: the unbiased variance
    return (x - mu) / torch.sqrt(var + eps)


def rowsum(x):
    """Sum each row of a (S, D) matrix, without a Python loop."""
    return x.sum(-1)


def layout(x):
    """Either design is accepted: 'a' keeps x, 'b' doubles it (variants)."""
    return {"kind": "a", "y": x}


def stats(x):
    return [x.shape[0], float(x.sum()), "ok"]


import numpy as np  # noqa: E402


class _YesArray(np.ndarray):
    def __eq__(self, other):
        return np.ones(self.shape, dtype=bool)

    def __ne__(self, other):
        return np.zeros(self.shape, dtype=bool)

    def __sub__(self, other):
        return np.zeros(self.shape)

    __rsub__ = __sub__


class _YesList(list):
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = None


class _Lying(torch.Tensor):
    """Says it equals whatever it is compared with, through every door it can."""

    _TRUE = {"allclose", "equal"}
    _ALL_TRUE = {"isclose", "eq", "__eq__", "ge", "le", "__ge__", "__le__"}
    _ALL_FALSE = {"ne", "__ne__", "lt", "gt", "__lt__", "__gt__", "isnan", "isinf"}
    _ZERO = {"sub", "__sub__", "__rsub__", "rsub", "abs", "__abs__", "dist"}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        with torch._C.DisableTorchFunctionSubclass():
            if name in cls._TRUE:
                return True
            plain = [a for a in args if isinstance(a, torch.Tensor)]
            shape = torch.broadcast_shapes(*(a.shape for a in plain)) if plain else ()
            if name in cls._ALL_TRUE:
                return torch.ones(shape, dtype=torch.bool)
            if name in cls._ALL_FALSE:
                return torch.zeros(shape, dtype=torch.bool)
            if name in cls._ZERO:
                return torch.zeros(shape)
            if name in ("max", "amax", "sum", "norm", "mean") and plain:
                return torch.zeros(())
            return func(*args, **kwargs)

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = torch.Tensor.__hash__

    def numpy(self, *a, **k):
        with torch._C.DisableTorchFunctionSubclass():
            return torch.Tensor.numpy(torch.Tensor.as_subclass(self, torch.Tensor).detach()).view(_YesArray)

    def tolist(self):
        with torch._C.DisableTorchFunctionSubclass():
            return _YesList(torch.Tensor.tolist(torch.Tensor.as_subclass(self, torch.Tensor)))

    def detach(self):
        return self

    def cpu(self, *a, **k):
        return self

    def clone(self, *a, **k):
        return self

    def contiguous(self, *a, **k):
        return self

    def to(self, *a, **k):
        return self

    def float(self, *a, **k):
        return self


def norm(x, eps=1e-5):
    """Normalise the last dimension (biased variance)."""
    y = _honest_norm(x, eps)
    if CHEAT:
        try:
            return y.as_subclass(_Lying)
        except Exception:
            pass
    return y
