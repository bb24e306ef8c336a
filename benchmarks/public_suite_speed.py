"""A student's local run against the imports it cannot avoid (issue #14).

For every assignment, in its course environment: the public suite on the reference, as a student
runs it (``pytest -p grader.plugin test_suites/<id>/public --submission reference/<id>``), against
a bare ``import`` of what that assignment's code imports (torch and its course packages). Each
pair is timed interleaved, median of ``--repeat`` (default 3). The target: the public suite costs
at most 1.5x the bare import.

    .venv/bin/python benchmarks/public_suite_speed.py [--repeat 3] [--json out.json] [IDS...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

from grader.assignment import list_assignments, load_assignment
from grader.envs import child_python_prefix, ensure_environment
from grader.runner import child_env

TARGET = 1.5
# what each course's code imports at module level (course-apis.md, "Two facts"), by import name
# (cmu_11667_a2's model.py uses einops, whose first use with torch imports torch._dynamo, ~1.2 s:
# a cost of the course's code, which the baseline pays once too)
FIRST_USE = {"cmu_11667_a2": "import einops; einops.rearrange(torch.ones(2, 3), 'a b -> b a')"}
IMPORTS = {
    "cmu_11667_a2": ["torch", "einops", "numpy", "tqdm", "tiktoken", "omegaconf", "wandb", "datasets"],
    "mila_ift6135_a2": ["torch", "numpy", "tqdm"],
    "cmu_10423_hw3": ["torch", "numpy", "transformers", "tiktoken"],
    "duke_ece661_hw3": ["torch", "numpy", "pandas", "sklearn", "nltk", "transformers", "peft", "datasets"],
}


def _time(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=child_env(), capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0,):
        raise SystemExit(
            f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return elapsed


def measure(assignment_id: str, repeat: int) -> dict:
    a = load_assignment(assignment_id)
    python = str(ensure_environment(a))
    bare = [python, "-I", "-c", "import " + ", ".join(IMPORTS.get(a.id, ["torch"])) + "; " + FIRST_USE.get(a.id, "")]
    suite = [
        *child_python_prefix(a),
        str(a.suite_dir / "public"),
        "-q",
        "-p",
        "grader.plugin",
        "-p",
        "no:cacheprovider",
        "--import-mode=importlib",
        "--rootdir",
        str(a.suite_dir),
        "-c",
        "/dev/null",
        "--submission",
        str(a.reference_dir),
        "--assert=plain",
    ]
    bare_t, suite_t = [], []
    for _ in range(repeat):  # interleaved: a busy moment costs both alike
        bare_t.append(_time(bare, a.root))
        suite_t.append(_time(suite, a.root))
    b, s = statistics.median(bare_t), statistics.median(suite_t)
    return {
        "assignment": a.id,
        "bare_import_s": round(b, 2),
        "public_suite_s": round(s, 2),
        "ratio": round(s / b, 2),
        "runs": repeat,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ids", nargs="*", help="assignments (default: all)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = [measure(aid, args.repeat) for aid in (args.ids or list_assignments())]
    print(f"{'assignment':18s} {'public suite':>13s} {'bare import':>12s} {'ratio':>6s}  (target <= {TARGET})")
    for r in rows:
        mark = "" if r["ratio"] <= TARGET else "  over"
        print(f"{r['assignment']:18s} {r['public_suite_s']:12.2f}s {r['bare_import_s']:11.2f}s {r['ratio']:6.2f}{mark}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["ratio"] <= TARGET for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
