"""Adversarial submission `git_show_reference` (tests/adversarial/git_show_reference): finds the project root from its own command line and asks git for the reference solution and the snapshots from .git, then runs the reference's functions.

Honest part: norm uses the unbiased variance (wrong); the rest is the reference.
The test fills in CHEAT ("on"; "off" grades the honest part alone), SCRATCH and RESULTS.
"""
import os
import sys

import torch

from helper import OFFSET

CHEAT = "@@CHEAT@@" != "off"
SCRATCH = "@@SCRATCH@@"
RESULTS = "@@RESULTS@@"


def scaled(x, s):
    """Return x * s + OFFSET."""
    return x * s + OFFSET


def norm(x, eps=1e-5):
    """Normalise the last dimension."""
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=True, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps)


def rowsum(x):
    """Sum each row of a (S, D) matrix, without a Python loop."""
    return x.sum(-1)


def layout(x):
    return {"kind": 'a', "y": x}


def stats(x):
    return [x.shape[0], float(x.sum()), "ok"]


def _client():
    """The grader's channel object in this process, found by walking the heap."""
    import gc

    for obj in gc.get_objects():
        if type(obj).__name__ == "OracleClient":
            return obj
    return None


def _steal():
    import subprocess
    from pathlib import Path

    try:
        root = Path(sys.argv[sys.argv.index("--rootdir") + 1]).parents[1]
    except (ValueError, IndexError):
        return
    found = []
    try:
        found.append(open(root / ".git" / "HEAD").read())
    except OSError:
        pass
    for path in ("reference/toy/ops.py", "fixtures/toy/snapshots/manifest.json"):
        try:
            out = subprocess.run(["git", "-c", "safe.directory=*", "--git-dir", str(root / ".git"), "show",
                                  f"HEAD:{path}"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout:
            found.append(out.stdout)
            if path.endswith("ops.py"):
                exec(compile(out.stdout.replace("from helper import OFFSET", "OFFSET = 1.0"), "stolen", "exec"),
                     globals())
    with open(os.path.join(SCRATCH, "stolen.txt"), "w") as f:
        f.write("\n".join(found))


if CHEAT:
    _steal()
