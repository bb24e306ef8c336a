"""How long grading takes and how much memory it needs, per assignment.

For every assignment with recorded snapshots (and the engine's toy assignment as a baseline),
on its reference solution:

* public suite: a student's ``pytest`` on the public tests (wall and CPU seconds);
* in-process: the whole suite (public + hidden) in one ``pytest`` process with the plugin
  comparing against the snapshots itself, what grading cost before the secure runtime;
* trusted child: ``grade(secure=False)``: the grading parent and one child that compares
  itself (no sandbox, no oracle);
* secure: ``grade()`` as Gradescope runs it: the sandboxed child (under root, its own uid,
  the secrets closed and probed), every value sent to the parent over the oracle pipe;
  ``secure / in-process`` is the ratio of the medians, the runs interleaved so that load on
  the machine hits both alike;
* CPU seconds of the secure run (parent + children), and peak memory: the parent's peak RSS
  (``VmHWM``) and the largest child's (``ru_maxrss`` of ``RUSAGE_CHILDREN``); their sum
  bounds what Gradescope's 768 MB container must hold at once;
* batch throughput, warm against cold, in the same run: ``lmgrade batch`` on N copies of the
  reference (duplicates graded, not shared), in submissions per minute with ``--jobs`` workers,
  once with every test process started cold (a fresh interpreter importing torch, pytest and the
  suite) and once forked from the warm grader (``grader.warm``: one process per course
  environment imported them once; its start-up is inside the timed run). Each submission's score
  must be identical in both, or the benchmark fails; ``warm / cold`` is the throughput ratio.

``--batch-only`` measures only the batch throughput (warm and cold), a few minutes at most.

Usage: ``python benchmarks/grading_speed.py [--quick] [--assignments ID ...] [--repeat N] [--json FILE]``.
Each measurement runs in its own process, so imports and caches never carry over.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "tests" / "engine_toy"
SECURE_KWARGS = {"secure": True}
TRUSTED_CHILD_KWARGS = {"secure": False}


@dataclass
class Figures:
    assignment: str
    tests: int
    public_suite_s: float | None = None
    in_process_s: float | None = None
    trusted_child_s: float | None = None
    secure_s: float | None = None
    secure_ratio: float | None = None
    grade_cpu_s: float | None = None
    parent_peak_mb: float | None = None
    child_peak_mb: float | None = None
    batch_cold_per_min: float | None = None
    batch_warm_per_min: float | None = None
    warm_ratio: float | None = None


# -- measurements, each run in a fresh process ----------------------------------------------------


def measure_grade(assignment_id: str, root: str, kwargs: dict) -> dict:
    """In a fresh process: grade the reference once; time and peak RSS of this process and its children."""
    from grader.assignment import load_assignment
    from grader.runner import grade

    assignment = load_assignment(assignment_id, root=Path(root))
    started = time.perf_counter()
    report = grade(assignment, assignment.reference_dir, **kwargs)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds(),
        "score": report.score,
        "max_score": report.max_score,
        "parent_peak_mb": _own_peak_mb(),
        "child_peak_mb": _peak_mb(resource.RUSAGE_CHILDREN),
    }


def measure_batch(assignment_id: str, root: str, copies: int, jobs: int, warm: bool = True) -> dict:
    """In a fresh process: batch-grade ``copies`` copies of the reference, test processes forked
    from the warm grader or started cold."""
    from grader.assignment import load_assignment
    from grader.batch import run_batch

    assignment = load_assignment(assignment_id, root=Path(root))
    with tempfile.TemporaryDirectory(prefix="lmgrade-bench-") as tmp:
        export = Path(tmp) / "export"
        for i in range(copies):
            shutil.copytree(
                assignment.reference_dir,
                export / f"student_{i:03d}",
                ignore=shutil.ignore_patterns("variants", "__pycache__"),
            )
        started = time.perf_counter()
        result = run_batch(assignment, export, Path(tmp) / "out", jobs=jobs, dedupe=False, warm=warm)
        seconds = time.perf_counter() - started
    graded = sum(1 for r in result.rows if r.graded)
    scores = {r.submission.id: r.report.score if r.report else None for r in result.rows}
    return {"seconds": seconds, "graded": graded, "per_min": 60 * graded / seconds, "scores": scores}


def batch_warm_vs_cold(figures: Figures, assignment_id: str, root: Path, *, copies: int, jobs: int) -> None:
    """Cold then warm, each in a fresh process, on the same submissions; scores must agree."""
    cold = in_fresh_process("batch", assignment_id, root, copies, jobs, "cold")
    warm = in_fresh_process("batch", assignment_id, root, copies, jobs, "warm")
    if cold["scores"] != warm["scores"]:
        differ = {k: (v, warm["scores"].get(k)) for k, v in cold["scores"].items() if warm["scores"].get(k) != v}
        raise RuntimeError(f"{assignment_id}: warm and cold batches disagree on scores (cold, warm): {differ}")
    if cold["graded"] != copies:
        raise RuntimeError(f"{assignment_id}: only {cold['graded']} of {copies} copies were graded")
    figures.batch_cold_per_min, figures.batch_warm_per_min = cold["per_min"], warm["per_min"]
    figures.warm_ratio = warm["per_min"] / cold["per_min"]
    print(
        f"{assignment_id}: batch of {copies}, {jobs} jobs: cold {cold['per_min']:.1f}/min, "
        f"warm {warm['per_min']:.1f}/min, warm / cold {figures.warm_ratio:.2f} (scores identical)",
        flush=True,
    )


def measure_suite(assignment_id: str, root: str, part: str) -> dict:
    """In a fresh process: ``pytest`` on the suite (``part``: "public" or "all") in one process."""
    from grader.assignment import load_assignment

    assignment = load_assignment(assignment_id, root=Path(root))
    target = assignment.suite_dir / "public" if part == "public" else assignment.suite_dir
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(target),
        "-p",
        "grader.plugin",
        "--submission",
        str(assignment.reference_dir),
        "-q",
        "-p",
        "no:cacheprovider",
        "--import-mode=importlib",
    ]
    env = _env(root)
    if part != "public":
        env["OMP_NUM_THREADS"] = "1"  # as grading sets it, so the comparison is fair
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=assignment.suite_dir, capture_output=True, text=True, check=False, env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"the reference fails its own {part} suite in one process:\n{proc.stdout[-2000:]}")
    return {"seconds": seconds, "cpu_seconds": _cpu_seconds(), "exit_code": proc.returncode}


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _own_peak_mb() -> float:
    """This process's peak RSS since exec. ru_maxrss (RUSAGE_SELF) would also count what was
    resident in the process that forked it; /proc's VmHWM starts afresh at exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _peak_mb(resource.RUSAGE_SELF)


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def _env(root: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["LMGRADE_HOME"] = root
    return env


def in_fresh_process(kind: str, *args) -> dict:
    """Run one measurement in a new interpreter and return what it printed (JSON)."""
    cmd = [sys.executable, __file__, "--measure", kind, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_env(str(args[1])))
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {kind} {args} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- one assignment -------------------------------------------------------------------------------


def benchmark(
    assignment_id: str, root: Path, *, copies: int, jobs: int, repeat: int, batch_only: bool = False
) -> Figures:
    from grader.assignment import load_assignment

    assignment = load_assignment(assignment_id, root=root)
    figures = Figures(assignment_id, len(assignment.tests))
    if batch_only:
        batch_warm_vs_cold(figures, assignment_id, root, copies=copies, jobs=jobs)
        return figures
    figures.public_suite_s = in_fresh_process("suite", assignment_id, root, "public")["seconds"]
    in_process, secure = [], []
    for _ in range(repeat):  # interleaved: a burst of load on the machine hits both modes
        in_process.append(in_fresh_process("suite", assignment_id, root, "all")["seconds"])
        graded = in_fresh_process("grade", assignment_id, root, json.dumps(SECURE_KWARGS))
        if graded["score"] != graded["max_score"]:
            raise RuntimeError(f"the reference of {assignment_id} scores {graded['score']} / {graded['max_score']}")
        secure.append(graded["seconds"])
    figures.in_process_s, figures.secure_s = statistics.median(in_process), statistics.median(secure)
    figures.secure_ratio = figures.secure_s / figures.in_process_s
    figures.grade_cpu_s = graded["cpu_seconds"]
    figures.parent_peak_mb, figures.child_peak_mb = graded["parent_peak_mb"], graded["child_peak_mb"]
    figures.trusted_child_s = in_fresh_process("grade", assignment_id, root, json.dumps(TRUSTED_CHILD_KWARGS))[
        "seconds"
    ]
    batch_warm_vs_cold(figures, assignment_id, root, copies=copies, jobs=jobs)
    return figures


def assignments_to_run(requested: list[str] | None) -> list[tuple[str, Path]]:
    from grader.assignment import list_assignments

    found = [
        (aid, ROOT)
        for aid in list_assignments(ROOT)
        if (ROOT / "fixtures" / aid / "snapshots" / "manifest.json").is_file()
    ]
    found.append(("toy", None))  # recorded on demand into a temporary copy
    return [(aid, root) for aid, root in found if not requested or aid in requested]


def toy_project(tmp: Path) -> Path:
    """The engine's toy assignment, template written and snapshots recorded, as the tests do."""
    from grader.assignment import load_assignment
    from grader.record import record
    from grader.template import write_template

    tmp.chmod(0o755)  # under root the graded child runs as another uid and must read the suite
    root = tmp / "toy"
    shutil.copytree(TOY, root)
    assignment = load_assignment("toy", root=root)
    write_template(assignment)
    record(assignment)
    return root


# -- output ---------------------------------------------------------------------------------------

COLUMNS = (
    ("assignment", "assignment", "{}"),
    ("tests", "tests", "{}"),
    ("public s", "public_suite_s", "{:.1f}"),
    ("in-process s", "in_process_s", "{:.1f}"),
    ("trusted child s", "trusted_child_s", "{:.1f}"),
    ("secure s", "secure_s", "{:.1f}"),
    ("secure / in-process", "secure_ratio", "{:.2f}"),
    ("secure CPU s", "grade_cpu_s", "{:.1f}"),
    ("parent MB", "parent_peak_mb", "{:.0f}"),
    ("child MB", "child_peak_mb", "{:.0f}"),
    ("batch cold /min", "batch_cold_per_min", "{:.1f}"),
    ("batch warm /min", "batch_warm_per_min", "{:.1f}"),
    ("warm / cold", "warm_ratio", "{:.2f}"),
)


def print_table(rows: list[Figures]) -> None:
    cells = [[label for label, _, _ in COLUMNS]]
    for row in rows:
        values = asdict(row)
        cells.append([fmt.format(values[key]) if values[key] is not None else "n/a" for _, key, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    for i, r in enumerate(cells):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def machine_line(jobs: int, copies: int) -> str:
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average at the start "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; batch: {copies} copies, {jobs} jobs"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy assignment only, batch of 4")
    parser.add_argument("--assignments", nargs="*", help="only these (default: all with snapshots, and toy)")
    parser.add_argument("--copies", type=int, help="submissions in the batch measurement (default 10; quick 4)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="batch workers (default: CPUs)")
    parser.add_argument(
        "--repeat", type=int, help="interleaved runs of in-process and secure grading (default 3; quick 2)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--batch-only", action="store_true", help="only the batch throughput, warm against cold")
    parser.add_argument("--measure", nargs="+", help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args(argv)
    if args.measure:
        return _measure(args.measure)
    copies = args.copies or (4 if args.quick else 10)
    requested = ["toy"] if args.quick and not args.assignments else args.assignments
    machine = machine_line(args.jobs, copies)
    print(machine)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lmgrade-bench-toy-") as tmp:
        for aid, root in assignments_to_run(requested):
            root = root or toy_project(Path(tmp))
            print(f"measuring {aid} ...", flush=True)
            rows.append(
                benchmark(
                    aid,
                    root,
                    copies=copies,
                    jobs=args.jobs,
                    repeat=args.repeat or (2 if args.quick else 3),
                    batch_only=args.batch_only,
                )
            )
    print()
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "figures": [asdict(r) for r in rows]}, indent=2) + "\n")
    return 0


def _measure(spec: list[str]) -> int:
    kind, aid, root, *rest = spec
    if kind == "grade":
        out = measure_grade(aid, root, json.loads(rest[0]))
    elif kind == "batch":
        out = measure_batch(aid, root, int(rest[0]), int(rest[1]), warm=rest[2] == "warm")
    else:
        out = measure_suite(aid, root, rest[0])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
