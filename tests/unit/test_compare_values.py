"""grader.values and grader.compare on their own: encoding student values, comparing them with
recorded ones, and what the messages may say (no expected values or error sizes when hidden)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grader.compare import Tolerance, compare
from grader.values import UnsupportedValue, decode, encode

TOL = Tolerance(rtol=1e-4, atol=1e-5)


def _cmp(expected, actual, *, tol=TOL, reveal=False, mask=None, dtypes=None):
    et, ea = encode(expected)
    at, aa = encode(actual, prefix="a")
    return compare(et, ea, at, aa, tol=tol, reveal=reveal, mask=mask, path="`y`", dtypes=dtypes)


def test_plain_values_round_trip():
    value = {"x": torch.arange(6.0).reshape(2, 3), "n": 3, "s": "ok", "l": [1.5, None, True], "t": (torch.tensor(2.0),)}
    tree, arrays = encode(value)
    back = decode(tree, arrays)
    assert back["n"] == 3 and back["s"] == "ok" and back["l"] == [1.5, None, True]
    assert np.array_equal(back["x"], np.arange(6.0).reshape(2, 3)) and back["t"][0].shape == ()


def test_subclasses_are_read_through_their_base_type():
    class Liar(int):
        def __int__(self):
            return 99

        def __eq__(self, other):
            return True

    tree, _ = encode(Liar(3))
    assert tree == {"t": "int", "v": 3}
    with pytest.raises(UnsupportedValue):
        encode(object())


def test_bfloat16_keeps_its_dtype_name_and_0d_stays_0d():
    tree, arrays = encode(torch.tensor(1.5, dtype=torch.bfloat16))
    assert tree["dtype"] == "bfloat16" and tree["shape"] == [] and arrays["v"].dtype == np.float32


def test_matching_values_pass_and_dtype_is_exact_unless_allowed():
    x = torch.randn(3, 4)
    assert _cmp(x, x + 1e-7) == []
    assert _cmp(x, x.double()) == ["`y`: dtype float64, expected float32"]
    assert _cmp(x, x.double(), dtypes=("float32", "float64")) == []


def test_hidden_messages_hold_no_value_and_no_error_size():
    x = torch.zeros(2, 5)
    bad = x.clone()
    bad[1, 3] = 0.123456
    hidden = _cmp(x, bad)[0]
    assert (
        hidden
        == "`y`: values differ at 1 of 10 entries (10.0%), first at [1, 3] (tolerance atol 1e-05 + rtol 0.0001 x |expected|)"  # noqa: E501
    )
    shown = _cmp(x, bad, reveal=True)[0]
    assert "max abs error 0.123" in shown and "expected 0.0" in shown


def test_nan_counts_as_differing_and_a_mask_limits_the_comparison():
    x = torch.ones(2, 2)
    nan = x.clone()
    nan[0, 0] = float("nan")
    assert "differ at 1 of 4" in _cmp(x, nan)[0]
    assert _cmp(x, nan, mask=np.array([[False, True], [True, True]])) == []


def test_shape_kind_and_none_messages():
    x = torch.ones(2, 3)
    assert _cmp(x, torch.ones(3, 2)) == ["`y`: shape (3, 2), expected (2, 3)"]
    assert _cmp(x, x.numpy()) == ["`y`: expected a torch tensor, got a numpy array"]
    assert "not implemented yet" in _cmp(x, None)[0]
    assert _cmp([1, 2], [1, 2, 3]) == ["`y`: expected 2 items, got 3"]
    assert _cmp("abc", "abd") == [
        "`y`: got the string 'abd' (length 3), which differs from the expected string (length 3)"
    ]
