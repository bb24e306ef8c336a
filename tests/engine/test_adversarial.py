"""Adversarial submissions (issue #6, part 2): cheats must earn exactly what their honest part deserves.

Each folder of ``tests/adversarial/`` is one submission for the toy assignment (13 points): an
honest ``ops.py`` (the reference, or a deliberately wrong version) with one attack added, a
``CASE.md`` (one line) and an ``expected.yaml``::

    score: 11.0              # what the honest part deserves (comment: why)
    failing: [test ids]      # tests that must earn nothing
    tests: {test id: 0.5}    # optional: exact scores of single tests (partial credit)
    honest_score: 13.0       # optional (default: score): the score with the attack switched off
    needs_root: true         # optional: only meaningful when the grader drops to another uid
    wait_after: 5            # optional: seconds to wait after grade() before checking again
    symlinks: {name: target} # optional: links the test makes in the submission ({toy}, {results}...)
    absent: [glob, ...]      # optional: paths that must not exist after grading ({scratch_name})

The test copies the folder, fills in the placeholders of its files (``@@CHEAT@@``: "on",
``@@SCRATCH@@``: a world-writable folder where attacks leave the pids of what they start,
``@@RESULTS@@``: the results.json path, as well known as Gradescope's), grades it against a
private copy of the toy project and checks that

* the score is exactly ``score`` and every ``failing`` test earned 0;
* results.json exists, is valid, and is exactly what the parent built from its report;
* no hidden expected value (4 significant digits) and no reference solution line is in it;
* no process the submission started is alive after grade() returns;
* nothing outside the grading temp dir was written (toy copy and submission unchanged, no
  marker left by a submitted hook that must never run, nothing matching ``absent``);
* every test in results.json has the rubric's visibility.

The private toy copy is a git repository, as a checkout graded in place would be.

``LMGRADE_ADV_HONEST=1`` also grades every case with its attack switched off and checks
``honest_score``, i.e. that the expectations say what the honest code really earns.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from grader.assignment import load_assignment
from grader.results import build_results, validate
from grader.runner import grade

CASES_DIR = Path(__file__).parents[1] / "adversarial"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if p.is_dir()) if CASES_DIR.is_dir() else []
# Per-test timeout (seconds); LMGRADE_ADV_TIMEOUT overrides it. The honest toy tests take well
# under 1 s each; 8 s leaves room for two xdist workers on two loaded cores, and bounds what the
# hanging cases cost.
TIMEOUT = float(os.environ.get("LMGRADE_ADV_TIMEOUT", "8"))
MARK = "LMGRADE_ADV_MARK"  # set in the grading process's environment: its children inherit it
NUMERIC_META = {"score", "max_score", "execution_time", "duration"}  # numbers the grader itself writes
PARAMS = {"hidden/test_ops.py::test_scaled": ("0.5", "3.0")}  # parametrised toy tests (see its suite)
EXPECTED_KEYS = {
    "score",
    "failing",
    "tests",
    "honest_score",
    "needs_root",
    "wait_after",
    "symlinks",
    "max_results_bytes",
    "absent",
}


def _expected(case: str) -> dict:
    return yaml.safe_load((CASES_DIR / case / "expected.yaml").read_text(encoding="utf-8"))


def _rubric_scores(toy) -> dict[str, float]:
    """Every test id of a toy report and its points."""
    out = {}
    for spec in toy.tests:
        params = PARAMS.get(spec.test_id)
        if params:
            for p in params:
                out[f"{spec.test_id}[{p}]"] = spec.points / len(params)
        else:
            out[spec.test_id] = spec.points
    return out


# -- the corpus itself -------------------------------------------------------------------------


def test_corpus_is_complete(toy):
    assert len(CASES) >= 15, CASES
    points = _rubric_scores(toy)
    for case in CASES:
        folder = CASES_DIR / case
        lines = (folder / "CASE.md").read_text(encoding="utf-8").strip().splitlines()
        assert len(lines) == 1 and lines[0], f"{case}: CASE.md must be one line"
        assert (folder / "ops.py").is_file(), f"{case}: no ops.py"
        exp = _expected(case)
        assert set(exp) <= EXPECTED_KEYS, f"{case}: unknown keys {set(exp) - EXPECTED_KEYS}"
        assert isinstance(exp["score"], (int, float)) and isinstance(exp["failing"], list), case
        unknown = [t for t in [*exp["failing"], *(exp.get("tests") or {})] if t not in points]
        assert not unknown, f"{case}: unknown test ids {unknown}"
        # the score must be the sum of its parts: full points except failing / exact tests
        exact = exp.get("tests") or {}
        total = sum(0.0 if t in exp["failing"] else exact.get(t, p) for t, p in points.items())
        assert math.isclose(total, exp["score"], abs_tol=1e-9), f"{case}: score {exp['score']} but parts sum to {total}"
        assert not any(f.is_symlink() for f in folder.rglob("*")), (
            f"{case}: symlinks are made by the test, not committed"
        )


# -- helpers ---------------------------------------------------------------------------------


def _world_writable_dir(prefix: str) -> Path:
    """Outside /tmp: under root each run gets a private /tmp, where these would be invisible."""
    from grader.sandbox import run_folder

    d = Path(tempfile.mkdtemp(prefix=prefix, dir=run_folder()))
    d.chmod(0o777)
    return d


def _build_submission(case: str, dest: Path, subst: dict[str, str], links: dict[str, str]) -> Path:
    shutil.copytree(CASES_DIR / case, dest, ignore=shutil.ignore_patterns("CASE.md", "expected.yaml", "__pycache__"))
    for path in dest.rglob("*"):
        if path.is_file() and not path.is_symlink():
            text = path.read_text(encoding="utf-8")
            for key, value in subst.items():
                text = text.replace(key, value)
            path.write_text(text, encoding="utf-8")
    for name, target in links.items():
        (dest / name).symlink_to(target)
    return dest


def _digest(root: Path) -> dict[str, str]:
    """Every entry under root: sha256 of files, target of links, 'dir' for folders."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(
        f"{k}: {'new' if k not in before else 'gone' if k not in after else 'changed'}"
        for k in set(before) | set(after)
        if before.get(k) != after.get(k)
    )


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int, starttime: int = 0) -> bool:
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return not starttime or int(fields[19]) == starttime


def _marked_processes(token: str) -> set[int]:
    """Processes (not zombies) whose environment carries this case's mark."""
    want = f"{MARK}={token}".encode()
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if want in env and _alive(int(name)):
            out.add(int(name))
    return out


def _grader_servers() -> set[int]:
    """The warm servers this process keeps between gradings (grader.warm): the grader's own, not
    the submission's. What they fork for a run is still counted."""
    from grader import warm

    return {server.proc.pid for server in list(warm._SERVERS.values()) if getattr(server, "proc", None)}


def _descendants(root_pid: int) -> set[int]:
    servers = _grader_servers()
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields is not None and fields[0] not in ("Z", "X"):
                children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = set(), [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out - servers


def _unreaped_orphans() -> list[int]:
    """Zombies re-parented to this (subreaper) process from another session and never reaped:
    each one once made every later grading of this process spin in its kill loops for seconds."""
    me, my_sid = os.getpid(), os.getsid(0)
    out = []
    for name in os.listdir("/proc"):
        fields = _stat(int(name)) if name.isdigit() else None
        if fields and fields[0] == "Z" and int(fields[1]) == me and int(fields[3]) != my_sid:
            out.append(int(name))
    return out


def _recorded_pids(scratch: Path, report) -> set[tuple[int, int]]:
    """(pid, starttime) the attacks left in SCRATCH/pids-*.txt or printed as `ADV-PID pid start`."""
    text = "".join(p.read_text(errors="replace") for p in scratch.glob("pids-*.txt"))
    text += "\n".join(
        line.split("ADV-PID", 1)[1] for t in report.tests for line in t.stdout.splitlines() if "ADV-PID" in line
    )
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            out.add((int(parts[0]), int(parts[1])))
    return out


def _leftover_processes(token: str, scratch: Path, report, grace: float = 1.5) -> list[str]:
    """Processes the submission started that are still alive (after a short grace for SIGKILLed
    ones to finish exiting)."""
    deadline = time.time() + grace
    while True:
        found = {f"{pid} (carries the case's environment mark)" for pid in _marked_processes(token)}
        found |= {f"{pid} (a child of the grading process)" for pid in _descendants(os.getpid())}
        found |= {
            f"{pid} (recorded by the attack)" for pid, start in _recorded_pids(scratch, report) if _alive(pid, start)
        }
        if not found or time.time() > deadline:
            return sorted(found)
        time.sleep(0.1)


def _floats_of_tree(tree) -> list[float]:
    if isinstance(tree, dict):
        if tree.get("t") == "float" and isinstance(tree.get("v"), (int, float)):
            return [float(tree["v"])]
        return [x for v in tree.values() for x in _floats_of_tree(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in _floats_of_tree(v)]
    return []


def _snapshot_values(snapshots: Path, kind: str) -> np.ndarray:
    """|value| of every non-integer float recorded for the `kind` (hidden/public) tests."""
    from safetensors.numpy import load_file

    values: list[float] = []
    for variant in sorted(p for p in snapshots.iterdir() if p.is_dir()):
        for st in sorted((variant / kind).rglob("*.safetensors")):
            for arr in load_file(str(st)).values():
                if arr.dtype.kind == "f":
                    values.extend(arr.astype(np.float64).ravel().tolist())
        for js in sorted((variant / kind).rglob("*.json")):
            meta = json.loads(js.read_text(encoding="utf-8"))
            for keys in meta.get("tests", {}).values():
                for entry in keys.values():
                    values.extend(_floats_of_tree(entry.get("tree")))  # the values, not the tolerances
    arr = np.abs(np.array([v for v in values if math.isfinite(v) and v != round(v)], dtype=np.float64))
    return np.unique(arr)


NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _significant_digits(token: str) -> int:
    mantissa = re.split(r"[eE]", token)[0].lstrip("+-").replace(".", "")
    return len(mantissa.lstrip("0"))


def _numbers(obj, key: str = "") -> list[str]:
    """Number tokens of results.json with at least 4 significant digits, except the grader's own
    numeric fields (scores, times)."""
    if isinstance(obj, dict):
        return [t for k, v in obj.items() for t in _numbers(v, k)]
    if isinstance(obj, list):
        return [t for v in obj for t in _numbers(v, key)]
    if isinstance(obj, str):
        return [t for t in NUMBER.findall(obj) if _significant_digits(t) >= 4]
    if isinstance(obj, float) and key not in NUMERIC_META:
        return [repr(obj)] if _significant_digits(repr(obj)) >= 4 else []
    return []


def _matches(values: np.ndarray, x: float) -> bool:
    """x equals one of values to 4 significant digits."""
    if values.size == 0 or not math.isfinite(x) or x == 0:
        return False
    same_digits = any(f"{x:.3e}" == f"{v:.3e}" for v in values[np.abs(values - x) <= 1e-3 * x])
    return same_digits or bool((np.abs(values - x) <= 1e-4 * x).any())


def _leaks(results: dict, hidden: np.ndarray, public: np.ndarray) -> list[str]:
    out = []
    for token in _numbers(results):
        x = abs(float(token))
        if _matches(hidden, x) and not _matches(public, x):  # public values may be shown
            out.append(token)
    return out


def _solution_lines(toy, submission: Path) -> list[str]:
    """Reference lines between solution markers that the submission itself does not contain."""
    own = "\n".join(p.read_text(errors="replace") for p in submission.rglob("*.py") if p.is_file())
    lines, inside = [], False
    for line in (toy.reference_dir / "ops.py").read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if s.startswith("# BEGIN SOLUTION"):
            inside = True
        elif s.startswith("# END SOLUTION"):
            inside = False
        elif inside and len(s) >= 12 and s not in own:
            lines.append(s)
    return lines


def _table(report) -> str:
    return "\n".join(
        f"  {t.test_id}: {t.outcome} {t.score:g}/{t.max_score:g} {t.message[:160]!r}" for t in report.tests
    )


# -- the adversarial cases ------------------------------------------------------------------------


def _grade_case(
    case: str, toy_root: Path, shared_tmp: Path, tmp_path: Path, monkeypatch, cheat: str = "on"
) -> list[str]:
    """Grade one case; return every problem found (empty: the case holds)."""
    exp = _expected(case)
    if exp.get("needs_root") and os.geteuid() != 0:
        pytest.skip("only meaningful when the grader runs as root and drops the submission to another uid")
    # A private copy of the toy project, so an attack that gets through cannot spoil other cases;
    # under shared_tmp, because the unprivileged child must be able to enter it to read the suite.
    root = shared_tmp / f"adv-{case}-{uuid.uuid4().hex[:8]}" / "toy"
    shutil.copytree(toy_root, root, symlinks=True)
    _git_init(root)
    toy = load_assignment("toy", root=root)
    scratch = _world_writable_dir("adv-scratch-")
    out_dir = _world_writable_dir("adv-results-")
    results_path = out_dir / "results.json"
    token = uuid.uuid4().hex
    problems: list[str] = []
    try:
        fill = {
            "toy": str(root),
            "results": str(results_path),
            "scratch": str(scratch),
            "snapshots": str(toy.snapshots_dir),
        }
        links = {name: target.format(**fill) for name, target in (exp.get("symlinks") or {}).items()}
        folder = _build_submission(
            case,
            tmp_path / "submission",
            {"@@CHEAT@@": cheat, "@@SCRATCH@@": str(scratch), "@@RESULTS@@": str(results_path)},
            links,
        )
        before_toy, before_sub = _digest(root), _digest(folder)
        autograder_existed = os.path.lexists("/autograder")
        with monkeypatch.context() as m:
            m.setenv(MARK, token)
            m.chdir(out_dir)  # as if run as `lmgrade grade ... --results results.json` from there
            report = grade(toy, folder, results_path=results_path, timeout=TIMEOUT)
        leftovers = _leftover_processes(token, scratch, report)
        if leftovers:
            problems.append(f"processes started by the submission outlived grade(): {leftovers}")
        zombies = _unreaped_orphans()
        if zombies:
            problems.append(f"orphans of the run left unreaped (zombies of the grading process): {zombies}")
        by = {t.test_id: t for t in report.tests}
        want = exp["score"] if cheat == "on" else exp.get("honest_score", exp["score"])
        if abs(report.score - want) > 1e-6:
            problems.append(f"expected score {want:g}, got {report.score:g}")
        if cheat == "on":
            missing = [t for t in exp["failing"] if t not in by]
            earned = {t: by[t].score for t in exp["failing"] if t in by and by[t].score != 0}
            if missing:
                problems.append(f"tests missing from the report: {missing}")
            if earned:
                problems.append(f"tests that must earn nothing earned points: {earned}")
            for test_id, score in (exp.get("tests") or {}).items():
                if test_id not in by or abs(by[test_id].score - score) > 1e-6:
                    problems.append(
                        f"{test_id} must earn exactly {score:g}, got {by.get(test_id) and by[test_id].score}"
                    )
        problems += _check_results(results_path, report, toy, case, exp.get("max_results_bytes"))
        if exp.get("wait_after") and results_path.is_file():
            first = results_path.read_bytes()
            time.sleep(float(exp["wait_after"]))
            last = results_path.read_bytes() if results_path.is_file() else b""
            if last != first:
                problems.append(f"results.json changed within {exp['wait_after']} s after grade() returned")
            try:  # a late writer may rewrite the same forged bytes: compare with the report again
                ours = json.loads(last) == json.loads(json.dumps(build_results(report)))
            except ValueError:
                ours = False
            if not ours:
                problems.append(f"{exp['wait_after']} s after grade(), results.json is not the parent's")
            late = _leftover_processes(token, scratch, report, grace=0)
            if late:
                problems.append(f"processes alive {exp['wait_after']} s after grade(): {late}")
        changed = _diff(before_toy, _digest(root))
        if changed:
            problems.append(f"the toy project (snapshots, rubric, reference) was written: {changed}")
        changed = _diff(before_sub, _digest(folder))
        if changed:
            problems.append(f"the submission folder was written: {changed}")
        extra = sorted(p.name for p in out_dir.iterdir() if p.name != "results.json")
        if extra:
            problems.append(f"files written next to results.json: {extra}")
        ran = sorted(p.name for p in scratch.glob("ran-*"))
        if ran:
            problems.append(f"submitted or planted start-up files were executed: {ran}")
        import glob

        present = [
            p for pattern in exp.get("absent") or [] for p in glob.glob(pattern.format(scratch_name=scratch.name))
        ]
        if present:
            problems.append(f"left behind after grading: {present}")
            for p in present:
                shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.unlink(p)
        if not autograder_existed and os.path.lexists("/autograder"):
            problems.append("/autograder was created")
        if problems:
            problems.append("report:\n" + _table(report))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.rmtree(root.parent, ignore_errors=True)
    return problems


def _git_init(root: Path) -> None:
    import subprocess

    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "toy"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)


def _check_results(results_path: Path, report, toy, case: str, max_bytes: int | None) -> list[str]:
    if not results_path.is_file():
        return ["results.json was not written"]
    text = results_path.read_text(encoding="utf-8", errors="replace")
    problems = []
    if max_bytes and len(text.encode()) > max_bytes:
        problems.append(f"results.json is {len(text.encode())} bytes (limit {max_bytes})")
    try:
        results = json.loads(text)
        validate(results)
    except Exception as err:
        return problems + [f"results.json does not parse or validate: {type(err).__name__}: {str(err)[:300]}"]
    if results != json.loads(json.dumps(build_results(report))):
        problems.append("results.json is not what the parent built from its report (something else wrote it)")
    wrong = [
        t["name"] for t in results["tests"] if t.get("visibility") != toy.visibility_for(t["extra_data"]["test_id"])
    ]
    if wrong:
        problems.append(f"tests shown with a visibility the rubric does not give: {wrong}")
    snapshots = toy.snapshots_dir
    leaks = _leaks(results, _snapshot_values(snapshots, "hidden"), _snapshot_values(snapshots, "public"))
    if leaks:
        problems.append(f"hidden expected values in results.json: {leaks[:10]}")
    shown = [line for line in _solution_lines(toy, CASES_DIR / case) if line in text or json.dumps(line)[1:-1] in text]
    if shown:
        problems.append(f"reference solution lines in results.json: {shown}")
    return problems


@pytest.mark.parametrize("case", CASES)
def test_adversarial(case, toy_root, shared_tmp, tmp_path, monkeypatch):
    problems = _grade_case(case, toy_root, shared_tmp, tmp_path, monkeypatch)
    assert not problems, f"{case}:\n" + "\n".join(problems)


@pytest.mark.skipif(
    os.environ.get("LMGRADE_ADV_HONEST") != "1", reason="set LMGRADE_ADV_HONEST=1 to check the honest parts"
)
@pytest.mark.parametrize("case", CASES)
def test_honest_part(case, toy_root, shared_tmp, tmp_path, monkeypatch):
    """With the attack switched off, the case earns `honest_score` (default: `score`) and is clean."""
    problems = _grade_case(case, toy_root, shared_tmp, tmp_path, monkeypatch, cheat="off")
    assert not problems, f"{case} (attack off):\n" + "\n".join(problems)
