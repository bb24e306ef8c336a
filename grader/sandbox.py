"""Where student code runs: an unprivileged uid, resource limits, and nothing left behind.

When the grader is root (Gradescope runs everything as root), each grading run takes a uid of
its own from a pool of unused uids (locked across processes, so parallel runs never share one),
closes the secrets to other users (the snapshots, the rubrics, the reference solutions, the
project's own tests), checks with a probe running as that uid that it really cannot read them,
and starts the test process through a small wrapper (``python -m grader.sandbox``) that sets
the limits and drops to that uid before it execs pytest.

Without root (a laptop, a TA's machine) there is no uid to drop to: the child runs as the
current user, with the same limits, and the run says so in a note.

Every process of a run carries ``LMGRADE_RUN=<token>`` in its environment and, under root, the
run's uid; after each test and at the end every such process but the test process itself is
killed, so a background process, a daemon that called ``setsid`` or a fork bomb never outlives
the test that started it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

UID_POOL = range(61000, 61256)
RUN_ENV = "LMGRADE_RUN"
DEFAULT_LIMITS = {
    "address_space_mb": 6144,  # virtual memory; torch + transformers map ~0.9 GB before any work
    "processes": 256,          # per uid, threads included (enforced only under a dropped uid)
    "file_size_mb": 1024,      # largest file the child may write
    "cpu_seconds": 3600,       # the whole child process; per-test CPU is watched by the parent
    "open_files": 1024,
}


class SandboxError(RuntimeError):
    """The sandbox cannot be set up as promised; grading must not go on without it."""


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class Sandbox:
    """One grading run's isolation: uid (or None), token, lock, limits."""

    token: str
    uid: int | None = None
    limits: dict = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    _lock_fd: int | None = None

    @property
    def dropped(self) -> bool:
        return self.uid is not None

    def release(self) -> None:
        kill_run(self, keep=None)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def open_sandbox(token: str, *, limits: dict | None = None) -> Sandbox:
    box = Sandbox(token=token, limits={**DEFAULT_LIMITS, **(limits or {})})
    if is_root():
        box.uid, box._lock_fd = _claim_uid()
    return box


def _claim_uid() -> tuple[int, int]:
    lock_dir = Path(tempfile.gettempdir()) / "lmgrade-uids"
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(lock_dir, 0o700)
    for uid in UID_POOL:
        try:
            pwd.getpwuid(uid)
            continue  # a real account: never borrow it
        except KeyError:
            pass
        fd = os.open(lock_dir / str(uid), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _kill_uid(uid)  # leftovers of an earlier run that died before cleaning up
        return uid, fd
    raise SandboxError(f"no free uid in {UID_POOL.start}..{UID_POOL.stop - 1} for the test process")


def open_to_others(path: Path) -> bool:
    """Every folder from ``/`` down to ``path`` lets other users through (o+x)."""
    path = Path(path).resolve()
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def temp_root() -> str:
    """Where a run's folder goes: the usual temporary folder if other users can pass through
    it (the test process's uid must reach its own folder), else /tmp."""
    default = tempfile.gettempdir()
    if not is_root() or open_to_others(Path(default)) or not open_to_others(Path("/tmp")):
        return default
    return "/tmp"


# -- secrets -------------------------------------------------------------------------------------

def secret_paths(roots: list[Path]) -> list[Path]:
    """What the test process must not read: answers, rubrics, reference code, our own tests."""
    found: list[Path] = []
    for root in dict.fromkeys(Path(r).resolve() for r in roots):
        for rel in ("reference", "tests", "demo-out"):
            if (root / rel).exists():
                found.append(root / rel)
        found += sorted(root.glob("fixtures/*/snapshots"))
        found += sorted(root.glob("test_suites/*/assignment.yaml"))
    return found


def protect(paths: list[Path], uid: int, *, needed: list[Path] = ()) -> None:
    """Take other users' access away from ``paths`` and prove the uid cannot read them, while
    it can still read the ``needed`` ones (the suite, the fixture data)."""
    for path in paths:
        try:
            st = path.stat()
            os.chmod(path, st.st_mode & ~0o007)
        except OSError as err:
            raise SandboxError(f"cannot close {path} to the test process: {err}") from err
    readable = probe_readable([*paths, *needed], uid)
    leaked = [p for p in readable if Path(p) in set(paths)]
    if leaked:
        raise SandboxError("the test process could still read " + ", ".join(leaked[:3]))
    blocked = [p for p in needed if str(p) not in readable]
    if blocked:
        raise SandboxError(f"the test process (uid {uid}) cannot read {blocked[0]}: every folder above it "
                           "must be open to other users (chmod o+rx)")


_PROBE = """
import os, sys
import grader  # the test process must be able to run this Python and import lmgrade
bad = []
for p in sys.argv[1:]:
    try:
        if os.path.isdir(p):
            os.listdir(p)
        else:
            open(p, "rb").close()
        bad.append(p)
    except OSError:
        pass
print("\\n".join(bad))
"""


def probe_readable(paths: list[Path], uid: int) -> list[str]:
    try:
        out = subprocess.run([sys.executable, "-I", "-c", _PROBE, *map(str, paths)],
                             user=uid, group=uid, extra_groups=[], capture_output=True, text=True,
                             timeout=60, cwd="/", check=False)
    except OSError as err:
        raise SandboxError(f"an unprivileged user cannot run {sys.executable} ({err}); install Python and "
                           "lmgrade where every user can read them (a Python under /root cannot be used)") from err
    if out.returncode != 0:
        raise SandboxError(f"an unprivileged user cannot import lmgrade with {sys.executable}: "
                           f"{out.stderr.strip().splitlines()[-1:] or out.returncode}")
    return [line for line in out.stdout.splitlines() if line]


def give(path: Path, uid: int) -> None:
    """Hand a folder (the staged submission, the child's home) to the test process's uid."""
    for p in [path, *path.rglob("*")]:
        os.lchown(p, uid, uid)


# -- the wrapper: limits, privilege drop, exec ------------------------------------------------------

def wrapper_command(box: Sandbox, cmd: list[str]) -> list[str]:
    spec = {"uid": box.uid, "limits": box.limits}
    return [sys.executable, "-I", "-m", "grader.sandbox", json.dumps(spec), "--", *cmd]


def _apply_limits_and_exec(spec: dict, cmd: list[str]) -> None:
    limits = spec["limits"]
    mb = 1024 * 1024
    _setrlimit(resource.RLIMIT_AS, limits["address_space_mb"] * mb)
    _setrlimit(resource.RLIMIT_FSIZE, limits["file_size_mb"] * mb)
    _setrlimit(resource.RLIMIT_CPU, limits["cpu_seconds"])
    _setrlimit(resource.RLIMIT_NOFILE, limits["open_files"])
    _setrlimit(resource.RLIMIT_CORE, 0)
    uid = spec.get("uid")
    if uid is not None:
        _setrlimit(resource.RLIMIT_NPROC, limits["processes"])
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise SystemExit("lmgrade sandbox: could not drop privileges")
    os.execv(cmd[0], cmd)


def _setrlimit(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


# -- processes -----------------------------------------------------------------------------------

def run_processes(box: Sandbox) -> list[int]:
    """Pids of the run: the sandbox uid's processes, or those carrying the run's token."""
    me = os.getpid()
    pids = []
    needle = f"{RUN_ENV}={box.token}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        try:
            if box.uid is not None and entry.stat().st_uid == box.uid:
                pids.append(pid)
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(pid)
        except OSError:
            continue
    return pids


def kill_run(box: Sandbox, keep: int | None) -> int:
    """SIGKILL every process of the run except ``keep``; returns how many were killed."""
    killed = 0
    for _ in range(20):  # a fork bomb may add processes while we kill: repeat until none are left
        pids = [p for p in run_processes(box) if p != keep]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.02)
    return killed


def _kill_uid(uid: int) -> None:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


if __name__ == "__main__":  # python -m grader.sandbox SPEC -- CMD...
    _spec = json.loads(sys.argv[1])
    _cmd = sys.argv[sys.argv.index("--") + 1:]
    _apply_limits_and_exec(_spec, _cmd)
