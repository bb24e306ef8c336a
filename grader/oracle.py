"""The oracle: the channel between the untrusted test process and the grading parent.

The child (pytest running student code) never holds an expected value. ``snapshot.check`` and
``snapshot.judge`` in the child encode the value (``grader.values``) and send it here; the parent
compares it with the recorded snapshot, or applies the recorded rule to it (``grader.snapshots``,
``grader.judges``, numpy only), and answers pass/fail with a message that, for hidden tests, holds
no expected number and no error magnitude. The parent keeps its own record of what each test sent
and how it compared; scoring uses that record, never the child's word.

Wire format: one message per line, ``<token> <json>\\n`` in both directions. The parent sends
the token as the first line on the reply pipe; the plugin reads it in ``pytest_configure``,
before any student code is imported. Lines without the token are counted and ignored.

The protocol the parent enforces (``OracleServer.handle``), for the whole run, across restarts
of the test process:

* ``collected`` is taken once, from the first test process: it fixes the tests and their order;
* ``start`` is accepted once per test, for the next test in collected order that has not
  started, and only when no test is running; its clock starts then and is never reset;
* ``check`` and ``result`` belong to the running test; a key is answered once per test, ever;
* anything else is a protocol violation: the test it names (or the running one) fails with a
  note saying so, and the runner replaces the test process;
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

from grader.assignment import is_public
from grader.snapshots import SnapshotStore
from grader.values import decode

TOKEN_BYTES = 24
MAX_LINE = 256 * 1024 * 1024  # one checked value, base64-encoded
MAX_CHECKS_PER_TEST = 512
MAX_SEEN_BYTES = 256 * 2**20  # values of one test kept for the rules that compare them
MAX_NOTES = 100
MAX_NOTE_CHARS = 500
REPLY_TIMEOUT = 120.0  # seconds the child waits for an answer before giving up
ARRAY_DTYPES = frozenset(
    {
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
    }
)


class ProtocolError(RuntimeError):
    """A message the parent cannot accept."""


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


# -- encoding arrays for the wire ----------------------------------------------------------------


def pack_arrays(arrays: dict[str, np.ndarray]) -> dict[str, dict]:
    out = {}
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr).reshape(np.shape(arr))
        out[name] = {
            "dtype": str(arr.dtype),
            "shape": list(arr.shape),
            "data": base64.b64encode(arr.tobytes()).decode("ascii"),
        }
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
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
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
        return (
            isinstance(ref, str)
            and ref in arrays
            and isinstance(tree.get("dtype"), str)
            and list(arrays[ref].shape) == tree.get("shape")
        )
    if t in ("list", "tuple"):
        return isinstance(tree.get("items"), list) and all(_valid_tree(i, arrays, depth + 1) for i in tree["items"])
    if t == "dict":
        items = tree.get("items")
        return isinstance(items, list) and all(
            isinstance(p, list)
            and len(p) == 2
            and _valid_tree(p[0], arrays, depth + 1)
            and _valid_tree(p[1], arrays, depth + 1)
            for p in items
        )
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
    """What the parent saw of one test: which keys matched, in which variants, and the values."""

    alive: list[str]
    matched: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # key -> the problem told to the child
    seen: dict[str, object] = field(default_factory=dict)  # key -> decoded value, for rules
    seen_bytes: int = 0
    checks: int = 0


@dataclass(frozen=True)
class Verdict:
    """The parent's own judgement of one test, from its record."""

    ok: bool
    message: str = ""
    recorded: bool = True  # the reference recorded at least one key for the test


@dataclass
class Handled:
    """What the runner must do after a message: answer the child, start or stop a clock."""

    reply: dict | None = None
    started: str | None = None
    finished: str | None = None
    violation: str | None = None


class Notes:
    """Notes for the report: deduplicated with a set, capped in number and length."""

    def __init__(self, limit: int = MAX_NOTES):
        self.items: list[str] = []
        self._seen: set[str] = set()
        self.dropped = 0
        self.limit = limit

    def add(self, text: str) -> None:
        text = str(text)[:MAX_NOTE_CHARS]
        if text in self._seen:
            return
        if len(self.items) >= self.limit:
            self.dropped += 1
            return
        self._seen.add(text)
        self.items.append(text)

    def extend(self, texts) -> None:
        for t in texts:
            self.add(t)

    def as_list(self) -> list[str]:
        more = [f"{self.dropped} further notes were not kept"] if self.dropped else []
        return self.items + more


class OracleServer:
    """Answers one grading run's checks and keeps the evidence scoring relies on."""

    def __init__(self, store: SnapshotStore | None, token: str):
        self.store = store
        self.token = token
        self.records: dict[str, KeyRecord] = {}
        self.collected: list[str] | None = None
        self.started: dict[str, float] = {}
        self.running: str | None = None
        self.results: dict[str, dict] = {}
        self.notes = Notes()
        self.rejected = 0  # lines without the token, or that broke the protocol
        self.violations = 0

    # messages
    def parse(self, line: bytes) -> dict | None:
        """The message in ``line`` if it carries the token and is a JSON object, else None."""
        prefix = self.token.encode() + b" "
        if not line.startswith(prefix):
            self.rejected += 1
            return None
        try:
            msg = json.loads(line[len(prefix) :])
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            self.rejected += 1
            return None
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            self.rejected += 1
            return None
        return msg

    def frame(self, msg: dict) -> bytes:
        return (self.token + " " + json.dumps(msg) + "\n").encode()

    def next_expected(self) -> str | None:
        """The next collected test that has not started (the only one ``start`` may name)."""
        for t in self.collected or ():
            if t not in self.started and t not in self.results:
                return t
        return None

    def handle(self, msg: dict, now: float, *, result_filter=None) -> Handled:
        """Apply one message from the child to the run's state."""
        kind, test = msg["event"], msg.get("test")
        if kind == "collected":
            if self.collected is None and isinstance(msg.get("tests"), list):
                self.collected = [t for t in msg["tests"] if isinstance(t, str)]
            return Handled()
        if kind == "note":
            if isinstance(msg.get("text"), str):
                self.notes.add(msg["text"])
            return Handled()
        if kind == "start":
            return self._start(test, now)
        if kind == "check":
            key = msg.get("key")
            if self.running is None or test != self.running:
                return self._violation(
                    test,
                    f"a value was sent for {test!r} while it was not running",
                    reply={"ok": False, "message": "not the running test", "key": key},
                )
            return Handled(reply={**self.answer(test, msg), "key": key})
        if kind == "result":
            if self.running is None or test != self.running:
                return self._violation(test, f"a result was sent for {test!r} while it was not running")
            self.results[test] = result_filter(msg) if result_filter else msg
            self.running = None
            return Handled(finished=test)
        self.rejected += 1
        return Handled()

    def _start(self, test, now: float) -> Handled:
        if not isinstance(test, str) or self.collected is None or test not in self.collected:
            self.rejected += 1
            return Handled()
        if self.running is not None:
            return self._violation(self.running, f"the test process announced {test} while this test was running")
        if test in self.started or test in self.results:
            return self._violation(test, "the test process started this test a second time")
        expected = self.next_expected()
        if test != expected:
            return self._violation(test, f"the test process started this test out of order (expected {expected})")
        self.started[test] = now
        self.running = test
        return Handled(started=test)

    def _violation(self, test, why: str, reply: dict | None = None) -> Handled:
        """Fail the test the message names (or the running one) and say why; the runner then
        replaces the test process."""
        self.violations += 1
        victim = test if isinstance(test, str) and self.collected and test in self.collected else self.running
        note = f"protocol violation: {why}; the test process was replaced"
        self.notes.add(note)
        if victim is not None and victim not in self.results:
            self.results[victim] = {
                "event": "result",
                "test": victim,
                "outcome": "failed",
                "message": f"the grader's channel was misused while this test ran ({why})",
                "duration": 0.0,
                "stdout": "",
            }
            self.started.setdefault(victim, 0.0)
        if victim == self.running:
            self.running = None
        return Handled(reply=reply, violation=victim or "")

    # checks
    def answer(self, test_id: str, msg: dict) -> dict:
        """Compare one checked value (or judge it by its recorded rule); the answer goes back."""
        key = msg.get("key")
        if self.store is None:
            return {"ok": False, "message": "this run has no snapshots to compare with"}
        if not isinstance(key, str) or not key or len(key) > 200:
            self.rejected += 1
            return {"ok": False, "message": "malformed check"}
        rec = self.records.setdefault(test_id, KeyRecord(alive=list(self.store.variants)))
        rec.checks += 1
        if rec.checks > MAX_CHECKS_PER_TEST:
            rec.failed.setdefault("", f"more than {MAX_CHECKS_PER_TEST} values sent in one test")
            return {"ok": False, "message": rec.failed[""]}
        if key in rec.matched or key in rec.failed:
            problem = f"`{key}` was already sent in this test; each key is compared once"
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
        reveal = is_public(test_id)
        alive, problems = self.store.match(test_id, rec.alive, key, tree, arrays, reveal=reveal, seen=rec.seen)
        size = sum(a.nbytes for a in arrays.values())
        if rec.seen_bytes + size <= MAX_SEEN_BYTES:
            rec.seen[key] = decode(tree, arrays)
            rec.seen_bytes += size
        if problems is None:
            rec.failed[key] = f"no snapshot recorded for key `{key}` of {test_id}; run `lmgrade record`"
            return {"ok": False, "message": rec.failed[key]}
        if not problems:
            rec.alive = alive
            rec.matched.add(key)
            return {"ok": True}
        rec.failed[key] = "; ".join(problems)
        return {"ok": False, "message": rec.failed[key]}

    def verdict(self, test_id: str) -> Verdict:
        """The parent's judgement of ``test_id`` from its own record.

        A test earns its points only if every key the reference recorded for it was sent and
        matched (or satisfied its rule) in one accepted variant. A test for which the reference
        recorded nothing has no evidence: ``recorded`` is False and the caller decides.
        """
        if self.store is None:
            return Verdict(ok=True, recorded=False)
        rec = self.records.get(test_id)
        if rec is not None and rec.failed:
            return Verdict(ok=False, message=next(iter(rec.failed.values())))
        alive = rec.alive if rec is not None else list(self.store.variants)
        wanted = [(v, self.store.expected_keys(test_id, v)) for v in alive]
        wanted = [(v, keys) for v, keys in wanted if keys]
        if not wanted:
            return Verdict(
                ok=False,
                recorded=False,
                message="the reference recorded no value for this test, so the grader has no "
                "evidence for it (run `lmgrade record`)",
            )
        matched = rec.matched if rec is not None else set()
        for _, keys in wanted:
            if set(keys) <= matched:
                return Verdict(ok=True)
        _, keys = wanted[0]
        missing = [k for k in keys if k not in matched]
        return Verdict(
            ok=False,
            message="the test did not send "
            + ", ".join(f"`{k}`" for k in missing[:5])
            + (" (it stopped before computing them)" if rec is None or not rec.matched else ""),
        )


# -- child side ----------------------------------------------------------------------------------


class OracleClient:
    """Used by the plugin inside the test process: events out, values sent and answered."""

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

    def ask(self, test_id: str, key: str, tree, arrays: dict[str, np.ndarray]) -> dict:
        """Send one value and wait for the parent's answer."""
        self.send({"event": "check", "test": test_id, "key": key, "tree": tree, "arrays": pack_arrays(arrays)})
        prefix = self._token + " "
        while True:
            line = self._read_line(REPLY_TIMEOUT)
            if line.startswith(prefix):
                answer = json.loads(line[len(prefix) :])
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
