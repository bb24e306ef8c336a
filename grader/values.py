"""Plain encodings of the values a test checks: a JSON tree plus named numpy arrays.

The same encoding is used to store snapshots on disk (JSON + safetensors) and, in secure
grading, to send a value from the untrusted child to the parent. Decoding needs numpy only.

Student objects are never trusted to describe themselves: an ``int`` subclass is read through
``int``'s own method, a tensor subclass is viewed as a plain tensor with torch-function
overrides disabled, and anything that is not a known plain type is refused.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Tree = dict[str, Any]


class UnsupportedValue(TypeError):
    """A value a snapshot cannot hold (a model, a generator, an arbitrary object)."""


def encode(value: Any, prefix: str = "v") -> tuple[Tree, dict[str, np.ndarray]]:
    """Encode ``value`` as (tree, arrays); array names start with ``prefix``."""
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(value, prefix, arrays, depth=0)
    return tree, arrays


def _encode(value: Any, name: str, arrays: dict[str, np.ndarray], depth: int) -> Tree:
    if depth > 32:
        raise UnsupportedValue("value nested more than 32 levels deep")
    if value is None:
        return {"t": "none"}
    if isinstance(value, (bool, np.bool_)):
        return {"t": "bool", "v": bool(value)}  # bool cannot be subclassed; np.bool_ is plain
    if isinstance(value, int):
        return {"t": "int", "v": int.__int__(value)}
    if isinstance(value, np.integer):
        return {"t": "int", "v": int(value)}
    if isinstance(value, float):
        return {"t": "float", "v": _float_json(float.__float__(value))}
    if isinstance(value, np.floating):
        return {"t": "float", "v": _float_json(float(value))}
    if isinstance(value, str):
        return {"t": "str", "v": str.__str__(value)}
    if type(value) is np.ndarray or isinstance(value, np.ndarray):
        plain = np.asarray(value).view(np.ndarray)
        arr = np.ascontiguousarray(plain).reshape(plain.shape)  # keeps 0-d arrays 0-d
        return _array_leaf(arr, str(arr.dtype), "array", name, arrays)
    tensor = _as_plain_tensor(value)
    if tensor is not None:
        dtype = str(tensor.dtype).removeprefix("torch.")
        if tensor.dtype.is_floating_point and tensor.element_size() < 4:
            tensor = tensor.float()  # numpy has no bfloat16; float32 holds bf16/fp16 exactly
        if tensor.is_complex():
            raise UnsupportedValue("complex tensors are not supported in snapshots")
        data = tensor.numpy()
        return _array_leaf(np.ascontiguousarray(data).reshape(data.shape), dtype, "tensor", name, arrays)
    if isinstance(value, (list, tuple)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        items = [_encode(v, f"{name}.{i}", arrays, depth + 1) for i, v in enumerate(list(value))]
        return {"t": kind, "items": items}
    if isinstance(value, dict):
        pairs = []
        for i, (k, v) in enumerate(dict.items(value)):
            pairs.append([_encode(k, f"{name}.k{i}", arrays, depth + 1), _encode(v, f"{name}.{i}", arrays, depth + 1)])
        return {"t": "dict", "items": pairs}
    raise UnsupportedValue(
        f"cannot check a value of type {type(value).__module__}.{type(value).__qualname__}; "
        "expected a tensor, array, number, string, or a list/tuple/dict of these"
    )


def _array_leaf(arr: np.ndarray, dtype: str, kind: str, name: str, arrays: dict[str, np.ndarray]) -> Tree:
    arrays[name] = arr
    return {"t": kind, "dtype": dtype, "shape": list(arr.shape), "ref": name}


def _as_plain_tensor(value: Any):
    """A detached CPU copy of ``value`` as a plain ``torch.Tensor``, or None if it is not one."""
    try:
        import torch
    except ImportError:  # the parent never sees tensors, only arrays
        return None
    if not isinstance(value, torch.Tensor):
        return None
    with torch._C.DisableTorchFunctionSubclass():
        plain = torch.Tensor.as_subclass(value, torch.Tensor)
        return plain.detach().to("cpu").clone().contiguous()


def _float_json(x: float) -> float | str:
    return x if math.isfinite(x) else repr(x)  # JSON has no NaN/inf: keep them as "nan", "inf"


def describe(tree: Tree) -> str:
    """Short human description of a value's kind: 'a tensor of shape (2, 3)', 'a list of 4'."""
    t = tree["t"]
    if t in ("tensor", "array"):
        return f"a {t} of shape {tuple(tree['shape'])} ({tree['dtype']})"
    if t in ("list", "tuple", "dict"):
        return f"a {t} of {len(tree['items'])} items"
    if t == "none":
        return "None"
    return f"a {t}"


def decode(tree: Tree, arrays: dict[str, np.ndarray]) -> Any:
    """The plain Python value of an encoded ``tree``: numpy arrays for tensors and arrays,
    lists for lists and tuples, dicts, numbers, strings and None (numpy only; for judges)."""
    t = tree["t"]
    if t in ("tensor", "array"):
        return arrays[tree["ref"]]
    if t in ("list", "tuple"):
        return [decode(item, arrays) for item in tree["items"]]
    if t == "dict":
        out = {}
        for k, v in tree["items"]:
            key = decode(k, arrays)
            out[key if isinstance(key, (str, int, float, bool)) or key is None else repr(key)] = decode(v, arrays)
        return out
    if t == "float":
        return float(tree["v"])
    if t in ("int", "bool", "str"):
        return tree["v"]
    return None
