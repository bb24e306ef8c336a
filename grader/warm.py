"""The warm grader: import the heavy modules once, fork a fresh test process per grading run.

A test process spends most of its start-up importing torch, pytest, the plugin and, for some
assignments, transformers. A warm server (one per Python environment and preload list, started
on first use by the grading process and kept for its lifetime) imports them once, then forks on
request. The fork is a sandbox keeper exactly like the cold one (``grader.sandbox``): a subreaper
in a session of its own, whose own fork unshares the mount namespace, sets the limits, drops to
the run's uid and runs ``pytest.main`` in process instead of exec'ing Python again.

What the warm server never holds: a token (the parent sends it down the oracle pipe after the
fork), a snapshot, a rubric with points, or anything of a submission. It never runs a test
itself, so every run forks from the same pristine state and nothing of one submission reaches
the next. It talks to the grading process only over a socket pair inherited at start (no path
another process could connect to); the fork closes its end before anything else runs.

Forking is unsafe once a thread has started (a lock held by another thread stays held in the
child). The server checks that it has exactly one thread after its imports, and answers every
request with a refusal otherwise; the grading process then starts the test process cold and
says so.
"""

from __future__ import annotations

import array
import atexit
import fcntl
import functools
import importlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from grader import sandbox

BASE_PRELOAD = ("numpy", "torch", "pytest", "pytest_timeout", "grader.plugin", "grader.guards", "grader.properties")
MAX_FDS = 8
HEADER = struct.Struct("!I")


# -- the wire: length-prefixed JSON, file descriptors alongside ----------------------------------


def _send(sock: socket.socket, msg: dict, fds: list[int] = ()) -> None:
    data = json.dumps(msg).encode()
    payload = HEADER.pack(len(data)) + data
    if fds:
        sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(payload)


def _recv(sock: socket.socket) -> tuple[dict | None, list[int]]:
    fds: list[int] = []
    head, anc, _flags, _addr = sock.recvmsg(HEADER.size, socket.CMSG_LEN(MAX_FDS * 4))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += array.array("i", data[: len(data) - len(data) % 4]).tolist()
    if not head:
        return None, fds
    while len(head) < HEADER.size:
        more = sock.recv(HEADER.size - len(head))
        if not more:
            return None, fds
        head += more
    (size,) = HEADER.unpack(head)
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            return None, fds
        body += chunk
    return json.loads(body), fds


# -- the server (runs in the warm process) --------------------------------------------------------


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _preload(name: str) -> None:
    """Import ``module`` or, for ``module:attr``, also resolve the attribute (a lazy package such
    as transformers imports the submodule behind ``transformers.Trainer`` only then)."""
    module, _, attr = name.partition(":")
    loaded = importlib.import_module(module)
    if attr:
        getattr(loaded, attr)


def serve(sock: socket.socket, preload: list[str]) -> None:
    for name in dict.fromkeys([*BASE_PRELOAD, *preload]):
        try:
            _preload(name)
        except Exception:
            continue
    import torch

    from grader.guards import count_ops

    count_ops(torch.add, torch.ones(1), 1)  # enters a dispatch mode once: torch._dynamo is imported now
    import gc

    gc.collect()
    gc.freeze()  # what the imports built is never scanned again in a fork, nor copied by a collection
    threads = _thread_count()
    _send(sock, {"ready": True, "threads": threads})
    children: set[int] = set()
    while True:
        msg, fds = {}, []
        try:
            if select.select([sock], [], [], 0.05)[0]:
                msg, fds = _recv(sock)
        except OSError:
            msg, fds = None, []
        if msg is None:  # the grading process is gone: so are its runs
            for pid in children:
                sandbox.kill_tree(pid, keep=())
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
            os._exit(0)
        if msg:
            if threads != 1:
                for fd in fds:
                    os.close(fd)
                _send(sock, {"id": msg["id"], "error": f"the warm process has {threads} threads: forking is unsafe"})
            else:
                pid = os.fork()
                if pid == 0:
                    _become_keeper(sock, msg, fds)  # never returns
                for fd in fds:
                    os.close(fd)
                children.add(pid)
                _send(sock, {"id": msg["id"], "pid": pid})
        while children:
            try:
                done, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if done == 0:
                break
            children.discard(done)
            _send(sock, {"exit": done, "status": os.waitstatus_to_exitcode(status)})


def _become_keeper(sock: socket.socket, msg: dict, fds: list[int]) -> None:
    """In the fork: take the run's descriptors, environment and folder, then keep the run."""
    try:
        sock.close()
        os.setsid()
        targets = [0, 1, 2, *msg["fd_targets"]]
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 256) for fd in fds]  # out of the targets' way first
        for fd in fds:
            os.close(fd)
        for src, dst in zip(high, targets):
            os.dup2(src, dst)
            os.close(src)
        keep = set(targets)
        for fd in _open_fds():
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        for dst in targets:
            os.set_inheritable(dst, True)
        os.environ.clear()
        os.environ.update(msg["env"])
        os.chdir(msg["cwd"])
        import tempfile

        tempfile.tempdir = None  # chosen again from this run's TMPDIR
        status = sandbox.keep(msg["spec"], lambda: _run_pytest(msg["spec"], msg["args"]))
    except BaseException:
        status = 70
    os._exit(status if 0 <= status < 256 else 1)


def _open_fds() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))


def _run_pytest(spec: dict, args: list[str]) -> None:
    """In the keeper's fork: the sandbox's limits and uid, then pytest in this process."""
    sandbox.enter(spec)
    import pytest

    sys.argv = ["pytest", *args]
    code = pytest.main(args)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(int(code) if isinstance(code, int) else 1)


def main() -> None:
    """``python -m grader.warm FD PRELOAD,...``: serve on the inherited socket ``FD``."""
    fd = int(sys.argv[1])
    preload = [m for m in (sys.argv[2] if len(sys.argv) > 2 else "").split(",") if m]
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    serve(sock, preload)


# -- the client (runs in the grading process) ----------------------------------------------------


class WarmUnavailable(RuntimeError):
    """The warm server could not fork this run; the caller starts the test process cold."""


@dataclass
class WarmProcess:
    """A test process forked by the warm server: what runner needs of a ``subprocess.Popen``."""

    server: WarmServer
    pid: int
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.status_of(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("warm test process", timeout)
            time.sleep(0.02)
        return self.returncode


@dataclass
class WarmServer:
    python: list[str]
    preload: tuple[str, ...]
    proc: subprocess.Popen | None = None
    sock: socket.socket | None = None
    threads: int = 0
    error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _replies: dict = field(default_factory=dict)
    _exits: dict = field(default_factory=dict)
    _next: int = 0
    _reader: threading.Thread | None = None
    log: object = None

    def log_tail(self) -> str:
        try:
            self.log.seek(0)
            return self.log.read().decode(errors="replace")[-2000:].strip()
        except (OSError, ValueError):
            return ""

    def start(self, env: dict[str, str]) -> None:
        import tempfile

        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - open for the server's life; the server's own errors, for the note that says why
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        from grader.envs import engine_dir

        code = "import sys; sys.path.insert(0, sys.argv.pop(1)); from grader.warm import main; main()"
        cmd = [*self.python, "-c", code, str(engine_dir()), str(theirs.fileno()), ",".join(self.preload)]
        self.proc = subprocess.Popen(
            cmd,
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            start_new_session=True,
        )
        theirs.close()
        sandbox.register_keeper(self.proc.pid)  # ours, in a session of its own: not an orphan to kill
        self.sock = ours
        msg, _ = _recv(ours)
        if not msg or not msg.get("ready"):
            raise WarmUnavailable(f"the warm grader did not start: {self.log_tail() or 'no answer'}")
        self.threads = int(msg.get("threads", 0))
        if self.threads != 1:
            self.error = f"the warm process has {self.threads} threads after its imports: forking is unsafe"
        self._reader = threading.Thread(target=self._read, name="lmgrade-warm-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                msg, fds = _recv(self.sock)
            except OSError:
                msg, fds = None, []
            for fd in fds:
                os.close(fd)
            with self._cond:
                if msg is None:
                    self.error = self.error or f"the warm grader stopped: {self.log_tail()[-300:]}"
                    self._cond.notify_all()
                    return
                if "exit" in msg:
                    self._exits[msg["exit"]] = msg["status"]
                elif "id" in msg:
                    self._replies[msg["id"]] = msg
                self._cond.notify_all()

    def spawn(
        self,
        args: list[str],
        *,
        env: dict[str, str],
        cwd: str,
        spec: dict,
        stdin: int,
        out: int,
        extra_fds: list[int],
        fd_targets: list[int],
    ) -> WarmProcess:
        """Fork a keeper that runs ``pytest args`` with the given descriptors and environment."""
        if self.error:
            raise WarmUnavailable(self.error)
        with self._lock:
            self._next += 1
            rid = self._next
            _send(
                self.sock,
                {"id": rid, "args": args, "env": env, "cwd": cwd, "spec": spec, "fd_targets": fd_targets},
                [stdin, out, out, *extra_fds],
            )
        with self._cond:
            while rid not in self._replies and not (self.error and self.proc.poll() is not None):
                self._cond.wait(timeout=1.0)
            reply = self._replies.pop(rid, None)
        if reply is None or "pid" not in reply:
            raise WarmUnavailable((reply or {}).get("error") or self.error or "no answer from the warm grader")
        return WarmProcess(self, int(reply["pid"]))

    def status_of(self, pid: int) -> int | None:
        with self._cond:
            if pid in self._exits:
                return self._exits.pop(pid)
        if self.proc is not None and self.proc.poll() is not None:
            # the server is gone: its keepers were re-parented to this (subreaper) process
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return -9 if not os.path.exists(f"/proc/{pid}") else None
            return os.waitstatus_to_exitcode(status) if done else None
        return None

    def close(self) -> None:
        if self.sock is not None:
            try:
                # shutdown first: the reader thread is blocked in recvmsg on this socket, and a
                # close() alone leaves the connection open until that call returns, so the
                # server never saw EOF and every `lmgrade batch` waited 10 s here to kill it
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                self.sock.close()
            except OSError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# what an assignment's tests import beyond torch and pytest, by distribution name -> module
PRELOADABLE = {
    "transformers": "transformers",
    "peft": "peft",
    "datasets": "datasets",
    "pandas": "pandas",
    "scikit-learn": "sklearn",
    "nltk": "nltk",
    "tiktoken": "tiktoken",
    "einops": "einops",
}


def warm_preload(assignment) -> tuple[str, ...]:
    """The modules worth importing once for ``assignment``: those of its course environment (or,
    without one, of lmgrade's own interpreter) among ``PRELOADABLE``, then what the reference and
    the suite import (``import wandb``, ``from transformers import Trainer``: a test process would
    otherwise import them afresh for every submission, seconds each)."""
    from grader.envs import canonical

    env = getattr(assignment, "environment", None)
    wanted = {canonical(name) for name in ((env.pins or {}) if env is not None else {})}
    base = tuple(module for dist, module in PRELOADABLE.items() if canonical(dist) in wanted)
    folders = tuple(
        str(d) for d in (assignment.reference_dir, assignment.suite_dir, assignment.template_dir) if d is not None
    )
    return tuple(dict.fromkeys([*base, *_imports_of(folders)]))


@functools.lru_cache(maxsize=64)
def _imports_of(folders: tuple[str, ...]) -> tuple[str, ...]:
    """``module`` and ``module:name`` for every absolute import in the ``.py`` files under
    ``folders`` (trusted: the reference and the suite), except the folders' own modules."""
    import ast
    from pathlib import Path

    files = [p for d in folders if Path(d).is_dir() for p in sorted(Path(d).rglob("*.py"))]
    local = {p.stem for p in files} | {p.parent.name for p in files} | {"grader", "__future__", "conftest"}
    found: list[str] = []
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found += [f"{node.module}:{alias.name}" for alias in node.names if alias.name != "*"]
    return tuple(dict.fromkeys(name for name in found if name.split(".")[0].split(":")[0] not in local))


_SERVERS: dict[tuple, WarmServer] = {}
_SERVERS_LOCK = threading.Lock()


def server_for(python: list[str], preload: tuple[str, ...], env: dict[str, str]) -> WarmServer:
    """The warm server for this Python and preload list, started on first use. If the imports
    the suite names leave a thread running (forking would be unsafe), a server with only the
    ``PRELOADABLE`` modules takes its place."""
    key = (tuple(python), tuple(preload))
    with _SERVERS_LOCK:
        server = _SERVERS.get(key)
        if server is None or (server.proc is not None and server.proc.poll() is not None):
            server = WarmServer(list(python), tuple(preload))
            server.start(env)
            basic = tuple(m for m in preload if m in PRELOADABLE.values())
            if server.error and server.threads > 1 and basic != tuple(preload):
                server.close()
                server = WarmServer(list(python), basic)
                server.start(env)
            _SERVERS[key] = server
        return server


@atexit.register
def _close_all() -> None:
    for server in list(_SERVERS.values()):
        server.close()
    _SERVERS.clear()


if __name__ == "__main__":
    main()
