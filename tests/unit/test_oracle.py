"""The oracle's wire and protocol (grader.oracle), without a grading run: lines without the token,
arrays from the child checked, one start per test in collected order, records never reset,
a violation failing the test it names, notes capped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grader.oracle import OracleServer, ProtocolError, pack_arrays, unpack_arrays
from grader.values import encode


@pytest.fixture
def server():
    return OracleServer(None, token="t0k")


def _check_msg(key, value):
    tree, arrays = encode(value)
    return {"event": "check", "key": key, "tree": tree, "arrays": pack_arrays(arrays)}


# -- the oracle ---------------------------------------------------------------------------------


def test_lines_without_the_token_are_ignored(server):
    assert server.parse(b'{"event": "result", "outcome": "passed"}') is None
    assert server.parse(b'other {"event": "result"}') is None
    assert server.parse(b't0k {"event": "start", "test": "x"}') == {"event": "start", "test": "x"}
    assert server.rejected == 2


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"a": {"dtype": "object", "shape": [1], "data": ""}}, "dtype"),
        ({"a": {"dtype": "float32", "shape": [4], "data": "AAAA"}}, "does not match"),
        ({"a": {"dtype": "float32", "shape": [-1], "data": ""}}, "shape"),
        ([], "object"),
    ],
)
def test_arrays_from_the_child_are_checked(spec, words):
    with pytest.raises(ProtocolError, match=words):
        unpack_arrays(spec)


def test_arrays_round_trip():
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "m": np.array([True, False])}
    back = unpack_arrays(json.loads(json.dumps(pack_arrays(arrays))))
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in arrays.items())


def test_the_protocol_is_enforced(server, toy):
    a, b, c = ("hidden/test_ops.py::test_stats", "hidden/test_ops.py::test_layout", "hidden/test_ops.py::test_norm")
    server.handle({"event": "collected", "tests": [a, b, c]}, now=0.0)
    # a check for a test that is not running (at import, before any start) fails that test
    out = server.handle({**_check_msg("kind", "a"), "test": b}, now=0.0)
    assert out.violation == b and server.results[b]["outcome"] == "failed"
    assert "misused" in server.results[b]["message"]
    assert server.handle({"event": "start", "test": a}, now=1.0).started == a
    # a second start while a runs fails a (it may not be reset or interleaved)
    out = server.handle({"event": "start", "test": c}, now=2.0)
    assert out.violation == a and server.running is None and server.results[a]["outcome"] == "failed"
    # a test that has ended (or failed) can never be started again: records are never reset
    out = server.handle({"event": "start", "test": a}, now=3.0)
    assert out.violation == a and server.started[a] == 1.0
    # only the next test in collected order may start
    assert server.handle({"event": "start", "test": c}, now=4.0).started == c
    out = server.handle({"event": "result", "test": a, "outcome": "passed"}, now=5.0)
    assert out.violation is not None and server.results[a]["outcome"] == "failed"
    assert server.handle({"event": "result", "test": c, "outcome": "passed"}, now=6.0).finished == c
    assert any("protocol violation" in n for n in server.notes.as_list())


def test_notes_are_capped_and_deduplicated():
    from grader.oracle import MAX_NOTES, Notes

    notes = Notes()
    for i in range(30_000):
        notes.add(f"note {i % (MAX_NOTES * 3)}")
    kept = notes.as_list()
    assert len(kept) == MAX_NOTES + 1 and "further notes were not kept" in kept[-1]
