"""Adversarial submission `read_reference` (tests/adversarial/read_reference): norm runs the reference solution's norm.

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


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _starttime(pid):
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, ValueError, IndexError):
        return 0


def _record_pid(pid, label):
    """Leave the pid where the test looks (SCRATCH) and in the captured output."""
    line = f"{pid} {_starttime(pid)}"
    try:
        with open(os.path.join(SCRATCH, f"pids-{label}.txt"), "a") as f:
            f.write(line + "\n")
    except OSError:
        pass
    return line


def _proc_chain():
    """This process and its ancestors: (pid, argv, cwd); unreadable entries are left empty."""
    out, pid = [], os.getpid()
    for _ in range(8):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            argv = []
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = None
        out.append((pid, argv, cwd))
        try:
            pid = int(_stat_fields(pid)[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
    return out


def _roots():
    """Folders that may hold the grading project (reference/, test_suites/, fixtures/)."""
    seen = []

    def add(p, up=4):
        try:
            p = os.path.realpath(str(p))
        except Exception:
            return
        for _ in range(up + 1):
            if p and p not in seen:
                seen.append(p)
            parent = os.path.dirname(p)
            if parent == p:
                break
            p = parent

    for _pid, argv, cwd in _proc_chain():  # the suite path, --rootdir, --submission, cwd
        for a in argv:
            for part in a.split("="):
                if part.startswith("/"):
                    add(part)
        if cwd:
            add(cwd)
    if os.environ.get("LMGRADE_HOME"):
        add(os.environ["LMGRADE_HOME"])
    try:
        import grader

        add(grader.project_root())
    except Exception:
        pass
    try:  # objects of the grader living in this process
        import gc

        for obj in gc.get_objects():
            kind = type(obj).__name__
            if kind == "Assignment":
                add(getattr(obj, "root", ""), 0)
            elif kind in ("SnapshotStore", "SnapshotWriter"):
                add(getattr(obj, "root", ""), 3)
            elif kind == "Config" and hasattr(obj, "rootpath"):
                add(obj.rootpath)
    except Exception:
        pass
    for p in list(sys.path):
        if isinstance(p, str) and p.startswith("/"):
            add(p, 2)
    return seen


def _reference():
    """The reference's namespace, found next to the suite and exec'd, or None."""
    import glob

    for root in _roots():
        for cand in [f"{root}/reference/toy/ops.py", *sorted(glob.glob(f"{root}/reference/toy/variants/*/ops.py"))]:
            try:
                if os.path.realpath(cand) == os.path.realpath(__file__):
                    continue
                with open(cand) as f:
                    src = f.read()
                ns = {"__name__": "_adv_reference", "__file__": cand}
                exec(compile(src, cand, "exec"), ns)
            except Exception:
                continue
            if callable(ns.get("norm")):
                print("[adv] read the reference at", cand)
                for line in src.splitlines():  # exfiltrate it through the captured output
                    if "var" in line or "sqrt" in line or "mean" in line:
                        print("[adv] reference:", line.strip())
                return ns
    return None


def norm(x, eps=1e-5):
    """Normalise the last dimension (biased variance)."""
    if CHEAT:
        try:
            ref = _reference()
            if ref is not None:
                return ref["norm"](x, eps)
        except Exception:
            pass
    return _honest_norm(x, eps)
