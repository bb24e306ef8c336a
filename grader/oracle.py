"""The oracle: the channel between the untrusted test process and the grading parent.

The child (pytest running student code) never holds an expected value. ``snapshot.check`` in
the child encodes the value (``grader.values``) and sends it here; the parent compares it with
the recorded snapshot (``grader.snapshots``, numpy only) and answers pass/fail with a message
that, for hidden tests, holds no expected number. The parent keeps its own record of which keys
of which test were checked and matched; scoring uses that record, not the child's word.

Wire format: one message per line, ``<token> <json>\\n`` in both directions. The parent sends
the token as the first line on the reply pipe; the plugin reads it in ``pytest_configure``,
before any student code is imported, and never exposes it. Lines without the token (a
submission writing into every file descriptor it can find) are counted and ignored.

Rules the parent enforces on what arrives:

* events follow the protocol: ``start`` names a collected test, ``check`` and ``result`` belong
  to the test that is running; anything else is ignored and counted;
* a key is answered once per test: a second check of the same key is refused, so the answers
  cannot be used to search for the expected values;
* arrays are rebuilt with numpy from raw bytes, with the dtype checked against a whitelist and
  the size against the shape; nothing is unpickled.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import select
from dataclasses import dataclass, field

import numpy as np

from grader.snapshots import SnapshotStore

TOKEN_BYTES = 24
MAX_LINE = 256 * 1024 * 1024  # one checked value, base64-encoded
MAX_CHECKS_PER_TEST = 512
REPLY_TIMEOUT = 120.0  # seconds the child waits for an answer before giving up
ARRAY_DTYPES = frozenset({
    "float16", "float32", "float64", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool",
})


class ProtocolError(RuntimeError):
    """A message the parent cannot accept."""


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


# -- encoding arrays for the wire ----------------------------------------------------------------

def pack_arrays(arrays: dict[str, np.ndarray]) -> dict[str, dict]:
    out = {}
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        out[name] = {"dtype": str(arr.dtype), "shape": list(arr.shape),
                     "data": base64.b64encode(arr.tobytes()).decode("ascii")}
    return out


def unpack_arrays(packed) -> dict[str, np.ndarray]:
    if not isinstance(packed, dict):
        raise ProtocolError("arrays must be an object")
    out = {}
    for name, spec in packed.items():
        if not isinstance(spec, dict) or not isinstance(name, str):
            raise ProtocolError("malformed array")
        dtype, shape, data = spec.get("dtype"), spec.get("shape"), spec.get("data")
        if dtype not in ARRAY_DTYPES:
            raise ProtocolError(f"array dtype {dtype!r} is not accepted")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ProtocolError("malformed array shape")
        raw = base64.b64decode(data, validate=True) if isinstance(data, str) else None
        if raw is None:
            raise ProtocolError("malformed array data")
        dt = np.dtype(dtype)
        if len(raw) != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
            raise ProtocolError("array data does not match its shape")
        out[name] = np.frombuffer(raw, dtype=dt).reshape(shape)
    return out


def _valid_tree(tree, arrays: dict, depth: int = 0) -> bool:
    """The value tree only uses the known node kinds and refers to arrays that were sent."""
    if depth > 40 or not isinstance(tree, dict):
        return False
    t = tree.get("t")
    if t in ("tensor", "array"):
        ref = tree.get("ref")
        return isinstance(ref, str) and ref in arrays and isinstance(tree.get("dtype"), str) \
            and list(arrays[ref].shape) == tree.get("shape")
    if t in ("list", "tuple"):
        return isinstance(tree.get("items"), list) and all(_valid_tree(i, arrays, depth + 1) for i in tree["items"])
    if t == "dict":
        items = tree.get("items")
        return isinstance(items, list) and all(
            isinstance(p, list) and len(p) == 2 and _valid_tree(p[0], arrays, depth + 1)
            and _valid_tree(p[1], arrays, depth + 1) for p in items)
    if t == "int":
        return type(tree.get("v")) is int
    if t == "bool":
        return type(tree.get("v")) is bool
    if t == "float":
        return type(tree.get("v")) in (int, float) or tree.get("v") in ("nan", "inf", "-inf")
    if t == "str":
        return type(tree.get("v")) is str
    return t == "none"


# -- parent side ---------------------------------------------------------------------------------

@dataclass
class KeyRecord:
    """What the parent saw of one test: which keys matched, in which variants."""

    alive: list[str]
    matched: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # key -> the problem told to the child
    checks: int = 0


class OracleServer:
    """Answers checks for one grading run and keeps the evidence scoring relies on."""

    def __init__(self, store: SnapshotStore | None, token: str):
        self.store = store
        self.token = token
        self.records: dict[str, KeyRecord] = {}
        self.rejected = 0  # lines without the token, or that broke the protocol

    # messages
    def parse(self, line: bytes) -> dict | None:
        """The message in ``line`` if it carries the token and is a JSON object, else None."""
        prefix = self.token.encode() + b" "
        if not line.startswith(prefix):
            self.rejected += 1
            return None
        try:
            msg = json.loads(line[len(prefix):])
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.rejected += 1
            return None
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            self.rejected += 1
            return None
        return msg

    def frame(self, msg: dict) -> bytes:
        return (self.token + " " + json.dumps(msg) + "\n").encode()

    # checks
    def check(self, test_id: str, msg: dict) -> dict:
        """Compare one checked value; the answer goes back to the child."""
        key = msg.get("key")
        if self.store is None:
            return {"ok": False, "message": "this run has no snapshots to compare with"}
        if not isinstance(key, str) or not key:
            self.rejected += 1
            return {"ok": False, "message": "malformed check"}
        rec = self.records.setdefault(test_id, KeyRecord(alive=list(self.store.variants)))
        rec.checks += 1
        if rec.checks > MAX_CHECKS_PER_TEST:
            return {"ok": False, "message": f"more than {MAX_CHECKS_PER_TEST} checks in one test"}
        if key in rec.matched or key in rec.failed:
            problem = f"`{key}` was already checked in this test; each key is compared once"
            rec.failed.setdefault(key, problem)
            rec.matched.discard(key)
            return {"ok": False, "message": problem}
        try:
            arrays = unpack_arrays(msg.get("arrays", {}))
            tree = msg.get("tree")
            if not _valid_tree(tree, arrays):
                raise ProtocolError("malformed value")
        except (ProtocolError, ValueError, TypeError) as err:
            self.rejected += 1
            rec.failed[key] = f"`{key}`: the value could not be read ({err})"
            return {"ok": False, "message": rec.failed[key]}
        reveal = test_id.startswith("public/")
        alive, problems = self.store.match(test_id, rec.alive, key, tree, arrays, reveal=reveal)
        if problems is None:
            rec.failed[key] = f"no snapshot recorded for key `{key}` of {test_id}"
            return {"ok": False, "message": rec.failed[key]}
        if not problems:
            rec.alive = alive
            rec.matched.add(key)
            return {"ok": True}
        rec.failed[key] = "; ".join(problems)
        return {"ok": False, "message": rec.failed[key]}

    def verdict(self, test_id: str) -> str | None:
        """None if the parent's evidence lets ``test_id`` earn its points, else why not.

        A test whose snapshots record keys must have checked and matched all of them in one
        accepted variant. A test with no recorded keys (a property test) has nothing to prove.
        """
        if self.store is None:
            return None
        rec = self.records.get(test_id)
        if rec is not None and rec.failed:
            return next(iter(rec.failed.values()))
        alive = rec.alive if rec is not None else list(self.store.variants)
        wanted = [(v, self.store.expected_keys(test_id, v)) for v in alive]
        wanted = [(v, keys) for v, keys in wanted if keys is not None]
        if not wanted:
            return None
        matched = rec.matched if rec is not None else set()
        for _, keys in wanted:
            if set(keys) <= matched:
                return None
        _, keys = wanted[0]
        missing = [k for k in keys if k not in matched]
        return "the test reported success but the grader never received " + \
            ", ".join(f"`{k}`" for k in missing)

    def reset(self, test_id: str) -> None:
        self.records.pop(test_id, None)


# -- child side ----------------------------------------------------------------------------------

class OracleClient:
    """Used by the plugin inside the test process: events out, checks answered."""

    def __init__(self, write_fd: int, read_fd: int, token: str):
        self._w, self._r, self._token = write_fd, read_fd, token
        self._pid = os.getpid()
        self._buffer = b""

    @classmethod
    def connect(cls, spec: str) -> OracleClient:
        """``spec`` is "WRITE_FD,READ_FD"; the first line on the read side is the token."""
        w, r = (int(x) for x in spec.split(","))
        client = cls(w, r, "")
        line = client._read_line(REPLY_TIMEOUT)
        hello = json.loads(line)
        client._token = hello["token"]
        return client

    def send(self, msg: dict) -> None:
        if os.getpid() != self._pid:
            return  # a forked copy of the test process does not speak for it
        data = (self._token + " " + json.dumps(msg) + "\n").encode()
        view = memoryview(data)
        while view:
            n = os.write(self._w, view)
            view = view[n:]

    def check(self, test_id: str, key: str, tree, arrays: dict[str, np.ndarray]) -> dict:
        self.send({"event": "check", "test": test_id, "key": key, "tree": tree, "arrays": pack_arrays(arrays)})
        prefix = self._token + " "
        while True:
            line = self._read_line(REPLY_TIMEOUT)
            if line.startswith(prefix):
                answer = json.loads(line[len(prefix):])
                if answer.get("key") == key:
                    return answer

    def _read_line(self, timeout: float) -> str:
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._r], [], [], timeout)
            if not ready:
                raise TimeoutError("the grader did not answer")
            chunk = os.read(self._r, 65536)
            if not chunk:
                raise ConnectionError("the grader closed the channel")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()
