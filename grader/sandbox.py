"""Where student code runs: an unprivileged uid, an allow-list of readable files, resource
limits, a private /tmp, and nothing left behind.

When the grader is root (Gradescope runs everything as root), each grading run takes a uid of
its own from a pool of unused uids (locked across processes, so parallel runs never share one).
Everything in the project is closed to other users except an allow-list: the engine, the test
suites (not their rubrics), the fixture data (not the snapshots) and the child's Python. A probe
running as that uid must fail to read what is closed (the snapshots, the rubrics, the reference,
``.git``, anything else at the project's top) and succeed on what it needs, or nothing is run.
Each run's folder is 0711 inside a run root others cannot list, and the staged submission and
home inside it are 0700 and owned by the run's uid, so parallel runs cannot read each other.

The child starts through a small keeper (``python -m grader.sandbox``): it makes itself a
subreaper (every orphan the child leaves behind, double-forked or ``setsid``, becomes the
keeper's), forks, and in the fork (under root) unshares a mount namespace with private,
size-capped tmpfs mounts on ``/tmp``, ``/var/tmp`` and ``/dev/shm``, sets the limits, drops to the
run's uid and execs pytest. When pytest ends the keeper kills every process left in its tree.
The parent also finds the run's processes by the keeper's tree, by uid (root) and by the run's
token, and kills all but the test process after each test. At release, files the uid left in
the shared temp folders (where no namespace could be made) are removed.

Without root (a laptop, a TA's machine) there is no uid to drop to and no namespace: the child
runs as the current user, with the same limits and the same keeper, and the run says so.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import pwd
import resource
import shutil
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
    "processes": 256,  # per uid, threads included (enforced only under a dropped uid)
    "file_size_mb": 1024,  # largest file the child may write
    "cpu_seconds": 3600,  # the whole child process; per-test CPU is watched by the parent
    "open_files": 1024,
    "tmp_mb": 1024,  # each private tmpfs (/tmp, /var/tmp, /dev/shm) when a namespace is made
}
# What the test process may read at a project's top level; everything else there is closed.
ALLOWED_TOP = ("grader", "test_suites", "fixtures", ".lmgrade")
CLOSED_INSIDE = ("fixtures/*/snapshots", "test_suites/*/assignment.yaml", "test_suites/*/*.yaml")
SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")
RUN_ROOT_UNDER_ROOT = Path("/var/lib/lmgrade/runs")
PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 16384, 1 << 18


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
        kill_run(self, root_pid=None, keep=())
        if self.uid is not None:
            sweep_shared_tmp(self.uid)
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
        sweep_shared_tmp(uid)
        return uid, fd
    raise SandboxError(f"no free uid in {UID_POOL.start}..{UID_POOL.stop - 1} for the test process")


def open_to_others(path: Path) -> bool:
    """Every folder from ``/`` down to ``path`` lets other users through (o+x)."""
    path = Path(path).resolve()
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def run_folder() -> str:
    """Where a run's folder goes. Under root: a root-owned folder others may pass through but not
    list (``/var/lib/lmgrade/runs``, or ``LMGRADE_RUN_ROOT``), outside the shared temp folders a
    run's namespace replaces. Otherwise the usual temporary folder."""
    if not is_root():
        return tempfile.gettempdir()
    root = Path(os.environ.get("LMGRADE_RUN_ROOT") or RUN_ROOT_UNDER_ROOT)
    try:
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o711)
    except OSError:
        return temp_root()
    return str(root) if open_to_others(root) else temp_root()


def temp_root() -> str:
    """The usual temporary folder if other users can pass through it, else /tmp."""
    default = tempfile.gettempdir()
    if not is_root() or open_to_others(Path(default)) or not open_to_others(Path("/tmp")):
        return default
    return "/tmp"


# -- the allow-list ------------------------------------------------------------------------------


def closed_paths(root: Path, *, python: str | None = None) -> list[Path]:
    """What the test process must not read under a project ``root``: every top-level entry but
    the allow-list (and the Pythons the test process may run, when they live there), and inside
    the allow-list the snapshots and the rubrics."""
    root = Path(root).resolve()
    keep = set(ALLOWED_TOP)
    # the test process's Python, and lmgrade's own (an assignment without a course environment
    # runs there): installed packages, no answers
    for interpreter in (python, sys.executable):
        prefix = _prefix_of(Path(interpreter)) if interpreter else None
        if prefix is not None and prefix.is_relative_to(root) and prefix != root:
            keep.add(prefix.relative_to(root).parts[0])
    out = [p for p in sorted(root.iterdir()) if p.name not in keep]
    for pattern in CLOSED_INSIDE:
        out += sorted(root.glob(pattern))
    return out


def _prefix_of(python: Path) -> Path | None:
    """The installation folder of an interpreter: ``.venv`` for ``.venv/bin/python``."""
    path = Path(os.path.abspath(python))
    return path.parent.parent if path.parent.name == "bin" else None


def lock_down(
    roots: list[Path], uid: int, *, needed: list[Path], python: str | None = None, engine: Path | None = None
) -> list[Path]:
    """Close each project root to other users but its allow-list, then prove with a probe run
    as ``uid`` (with the test process's ``python``, importing lmgrade from ``engine``) that
    nothing closed is readable and everything ``needed`` is."""
    closed: list[Path] = []
    for root in dict.fromkeys(Path(r).resolve() for r in roots):
        try:
            mode = root.stat().st_mode
            os.chmod(root, (mode & ~0o002) | 0o005)  # others may list the names (pytest walks up), no more
        except OSError as err:
            raise SandboxError(f"cannot close {root} to the test process: {err}") from err
        for path in closed_paths(root, python=python):
            try:
                st = path.lstat()
                if not os.path.islink(path):
                    os.chmod(path, st.st_mode & ~0o007)
                closed.append(path)
            except OSError as err:
                raise SandboxError(f"cannot close {path} to the test process: {err}") from err
    probe = [*closed, *[p / "HEAD" for p in closed if p.name == ".git"]]
    readable = probe_readable([*probe, *needed], uid, python=python, engine=engine)
    leaked = [p for p in readable if Path(p) in set(probe)]
    if leaked:
        raise SandboxError("the test process could still read " + ", ".join(leaked[:3]))
    blocked = [p for p in needed if str(p) not in readable]
    if blocked:
        raise SandboxError(
            f"the test process (uid {uid}) cannot read {blocked[0]}: every folder above it "
            "must be open to other users (chmod o+x) and it must be o+r"
        )
    return closed


_PROBE = """
import os, sys
if sys.argv[1]:
    sys.path.insert(0, sys.argv[1])
del sys.argv[1]
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


def probe_readable(paths: list[Path], uid: int, *, python: str | None = None, engine: Path | None = None) -> list[str]:
    python = python or sys.executable
    try:
        out = subprocess.run(
            [python, "-I", "-c", _PROBE, str(engine or ""), *map(str, paths)],
            user=uid,
            group=uid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            check=False,
        )
    except OSError as err:
        raise SandboxError(
            f"an unprivileged user cannot run {python} ({err}); install Python and "
            "lmgrade where every user can read them (a Python under /root cannot be used)"
        ) from err
    if out.returncode != 0:
        raise SandboxError(
            f"an unprivileged user cannot import lmgrade with {python}: "
            f"{out.stderr.strip().splitlines()[-1:] or out.returncode}"
        )
    return [line for line in out.stdout.splitlines() if line]


def give(path: Path, uid: int) -> None:
    """Hand a folder (the staged submission, the child's home) to the run's uid, private to it."""
    for p in [path, *path.rglob("*")]:
        os.lchown(p, uid, uid)
        if not p.is_symlink():
            os.chmod(p, 0o700 if p.is_dir() else (0o700 if os.access(p, os.X_OK) else 0o600))


# -- the keeper: subreaper, namespace, limits, privilege drop, exec -----------------------------------


def private_tmp_targets(box: Sandbox, needed: list[Path]) -> list[str]:
    """The shared temp folders a run's namespace can replace: not one holding a path the child
    needs (a suite unpacked in /tmp stays reachable; that folder is swept instead)."""
    if box.uid is None:
        return []
    resolved = [Path(os.path.realpath(p)) for p in needed]
    return [t for t in SHARED_TMP if not any(p.is_relative_to(os.path.realpath(t)) for p in resolved)]


def wrapper_command(box: Sandbox, cmd: list[str], private_tmp: list[str] = ()) -> list[str]:
    spec = {"uid": box.uid, "limits": box.limits, "private_tmp": list(private_tmp)}
    return [sys.executable, "-I", "-m", "grader.sandbox", json.dumps(spec), "--", *cmd]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> bool:
    """Orphans of this process's descendants are re-parented to it (Linux), not to init."""
    try:
        return _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _private_tmp(targets: list[str], size_mb: int) -> list[str]:
    """A mount namespace of its own with fresh tmpfs on ``targets`` (root only); the ones made."""
    libc = _libc()
    if not targets or libc.unshare(CLONE_NEWNS) != 0:
        return []
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return []
    opts = f"size={int(size_mb)}m,mode=1777".encode()
    return [
        t
        for t in targets
        if os.path.isdir(t) and libc.mount(b"tmpfs", t.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts) == 0
    ]


def enter(spec: dict) -> None:
    """In the test process, before any of its code runs: the private temp folders (root), the
    limits, then the run's uid (root)."""
    limits = spec["limits"]
    if "/tmp" in _private_tmp(spec.get("private_tmp") or [], limits.get("tmp_mb", 1024)):
        os.environ["TMPDIR"] = "/tmp"
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


def _exec_child(spec: dict, cmd: list[str]) -> None:
    enter(spec)
    os.execv(cmd[0], cmd)


def keep(spec: dict, run_child) -> int:
    """Be the run's keeper: a subreaper whose fork calls ``run_child()`` (which execs or exits);
    when that process ends, kill whatever it left, and return its exit status (dying of the
    signal it died of, so whoever waits for the keeper sees the same)."""
    become_subreaper()
    pid = os.fork()
    if pid == 0:
        try:
            run_child()
        finally:
            os._exit(127)

    def stop(signum, frame):  # the parent is stopping the run: take the whole tree down
        kill_tree(os.getpid(), keep=(os.getpid(),))
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    os.closerange(3, 1 << 16)  # the oracle's pipes belong to the child alone: EOF when it is gone
    status = 0
    while True:
        try:
            done, st = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if done == pid:
            status = os.waitstatus_to_exitcode(st)
            kill_tree(os.getpid(), keep=(os.getpid(),))
    if status < 0:
        _setrlimit(resource.RLIMIT_CORE, 0)
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


def _setrlimit(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


# -- processes -----------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, session id, uid) for every live process we can see.

    Zombies are left out: they run nothing and a signal cannot remove them, so counting them
    made every kill loop spin to its limit. Orphans of a run are re-parented to this (subreaper)
    process, so their zombies are ours to reap: any child of ours in another session that is not
    a keeper (keepers and warm servers are reaped by their owners) is reaped here."""
    table = {}
    me, my_sid = os.getpid(), os.getsid(0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            pid, ppid, sid = int(entry.name), int(fields[1]), int(fields[3])
            if fields[0] in (b"Z", b"X"):
                if ppid == me and sid != my_sid and pid not in _KEEPERS:
                    _reap(pid)
                continue
            table[pid] = (ppid, sid, entry.stat().st_uid)
        except (OSError, IndexError, ValueError):
            continue
    return table


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except OSError:
        pass


def descendants(root_pid: int, table: dict | None = None) -> list[int]:
    """Every live process below ``root_pid``. Without a ``table``, the tree is walked through
    ``/proc/PID/task/TID/children`` (a few reads, where a full table reads every process on the
    machine: the runner asks several times a test)."""
    if table is None:
        walked = _walk_children(root_pid)
        if walked is not None:
            return walked
        table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _sid, _uid) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root_pid]
    while todo:
        for kid in children.get(todo.pop(), ()):
            out.append(kid)
            todo.append(kid)
    return out


def _walk_children(root_pid: int) -> list[int] | None:
    """The tree below ``root_pid`` from the kernel's children lists; None where the kernel has
    none (then the caller reads the whole table)."""
    out, todo, seen = [], [root_pid], {root_pid}
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    kids = f.read().split()
            except FileNotFoundError:
                if pid == root_pid and os.path.isdir(f"/proc/{pid}"):
                    return None  # no children lists on this kernel
                continue
            except OSError:
                continue
            for kid in map(int, kids):
                if kid not in seen:
                    seen.add(kid)
                    if not _is_zombie(kid):  # as in _proc_table: a signal cannot remove it
                        out.append(kid)
                        todo.append(kid)
    return out


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # gone


def kill_tree(root_pid: int, keep=()) -> int:
    killed = 0
    for _ in range(20):
        pids = [p for p in descendants(root_pid) if p not in keep]
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.02)
    return killed


def run_processes(box: Sandbox, root_pid: int | None = None) -> list[int]:
    """Pids of the run: the keeper's tree, the sandbox uid's processes, those carrying the run's
    token, and orphans re-parented to this process from another session (a keeper that died)."""
    me, my_sid = os.getpid(), os.getsid(0)
    table = _proc_table()
    pids = set(descendants(root_pid, table)) if root_pid is not None else set()
    needle = f"{RUN_ENV}={box.token}".encode()
    for pid, (ppid, sid, uid) in table.items():
        if pid == me:
            continue
        if box.uid is not None and uid == box.uid:
            pids.add(pid)
        elif ppid == me and sid != my_sid and pid not in _KEEPERS:
            pids.add(pid)  # adopted: its keeper is gone
        else:
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        pids.add(pid)
            except OSError:
                continue
    return sorted(pids)


_KEEPERS: set[int] = set()  # live keepers of this process's runs (batch runs grade in threads)


def register_keeper(pid: int) -> None:
    _KEEPERS.add(pid)


def forget_keeper(pid: int) -> None:
    _KEEPERS.discard(pid)


def kill_run(box: Sandbox, root_pid: int | None, keep=()) -> int:
    """SIGKILL every process of the run except ``keep``; returns how many were killed."""
    killed = 0
    for _ in range(20):  # a fork bomb may add processes while we kill: repeat until none are left
        pids = [p for p in run_processes(box, root_pid) if p not in keep]
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
    for pid, (_ppid, _sid, owner) in _proc_table().items():
        if owner == uid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def sweep_shared_tmp(uid: int) -> int:
    """Remove what ``uid`` left in the shared temp folders (a run without a namespace)."""
    removed = 0
    for folder in SHARED_TMP:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
                removed += 1
            except OSError:
                continue
    return removed


def run_cpu_seconds(root_pid: int) -> float:
    """CPU time of a run so far: its live processes plus the ones they reaped."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in [root_pid, *descendants(root_pid)]:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            continue
    return total


def tree_disk_use(paths: list[Path], limit: int, max_entries: int = 100_000) -> int:
    """Bytes under ``paths`` (stops counting past ``limit`` or ``max_entries``, returning more
    than ``limit`` in the second case: a run that makes that many files is over its share)."""
    total, seen = 0, 0
    todo = [str(p) for p in paths]
    while todo:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue
        for e in entries:
            seen += 1
            if seen > max_entries:
                return limit + 1
            try:
                if e.is_dir(follow_symlinks=False):
                    todo.append(e.path)
                else:
                    total += e.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
            if total > limit:
                return total
    return total


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
    _cmd = sys.argv[sys.argv.index("--") + 1 :]
    sys.exit(keep(_spec, lambda: _exec_child(_spec, _cmd)))
