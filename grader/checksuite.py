"""``lmgrade check-suite``: the mistakes an author makes in a suite, found before a zip is built.

One line per problem, each saying what to run or fix:

* the rubric and the suite disagree: a collected test no question lists, a rubric line naming a
  test the suite does not define;
* the snapshots and the suite disagree: the suite is recorded afresh from the reference (into a
  temporary folder) and compared with the stored snapshots: a key the suite now sends but that was
  never recorded, a recorded key it no longer sends, a tolerance, mask, hint or rule that differs
  from what the test code says, values that changed, a graded test with no evidence at all;
* a rule forbids a name that does not exist (``torch.nn.functional.sofmax`` enforces nothing);
* the student template is out of sync with the reference;
* fewer mutants than the rubric's ``min_mutants`` (12 unless it says otherwise), and with
  ``mutants=True`` a mutant that keeps full marks or
  could keep them by rewriting its own test process (``evidence_score``).

``build-autograder`` and ``build-handout`` run it and refuse to build on failure; the project's
own tests run the same function.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from grader.assignment import Assignment


def check_suite(assignment: Assignment, *, record: bool = True, mutants: bool = False, jobs: int = 2) -> list[str]:
    """Every problem found, one line each (empty: the suite is consistent)."""
    from grader.template import check_template

    problems = rubric_problems(assignment)
    problems += rule_name_problems(assignment)
    problems += [f"template: {p} (run `lmgrade template {assignment.id}`)" for p in check_template(assignment)]
    if record:
        problems += snapshot_problems(assignment)
    problems += mutant_problems(assignment, grade_them=mutants, jobs=jobs)
    return problems


# -- the rubric against the suite ----------------------------------------------------------------


def collected_tests(assignment: Assignment) -> tuple[list[str], str]:
    """The suite's test ids (relative to the suite), and pytest's output if collection failed.

    A collection that succeeded is kept like a clean recording (see ``_cached``), keyed by the
    suite, the fixtures and the engine."""
    key = _inputs_fingerprint(assignment, "collect", ("suite", "fixtures"))
    ids, error = _cached(
        key, lambda: _collect(assignment), keep=lambda found: bool(found[0]) and not found[1], kind="collect"
    )
    return list(ids), error


def _collect(assignment: Assignment) -> tuple[list[str], str]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(assignment.suite_dir),
            "--collect-only",
            "-q",
            "-p",
            "grader.plugin",
            "-p",
            "no:cacheprovider",
            "--import-mode=importlib",
            "--rootdir",
            str(assignment.suite_dir),
            "-c",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        cwd=assignment.suite_dir,
        check=False,
    )
    ids = [line.strip() for line in out.stdout.splitlines() if "::" in line and not line.startswith(" ")]
    return ids, "" if out.returncode in (0, 5) and ids else (out.stdout + out.stderr)[-1500:]


def rubric_problems(assignment: Assignment) -> list[str]:
    collected, error = collected_tests(assignment)
    if error:
        return [f"the suite could not be collected: {error.strip().splitlines()[-1] if error.strip() else '?'}"]
    bases = {t.split("[", 1)[0] for t in collected}
    listed = {t.test_id: t for t in assignment.tests}
    out = [
        f"{t} is collected but no question lists it (add it to assignment.yaml, with 0 points if it earns none)"
        for t in sorted(bases - set(listed))
    ]
    out += [
        f"question {listed[t].question} lists {t}, which the suite does not define" for t in sorted(set(listed) - bases)
    ]
    return out


# -- rules -------------------------------------------------------------------------------------


def rule_name_problems(assignment: Assignment) -> list[str]:
    from grader.rules import UnknownOperation, expand

    out = []
    for rule in assignment.rules:
        try:
            names = expand(rule.forbid)
        except UnknownOperation as err:
            out.append(f"rule {rule.name}: {err}")
            continue
        for name in names:
            if not _exists(name):
                near = difflib.get_close_matches(name, _known_names(name), n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                out.append(f"rule {rule.name} forbids {name}, which does not exist, so it enforces nothing{hint}")
    return out


def _exists(name: str) -> bool:
    if name.startswith("aten."):
        import torch

        return hasattr(torch.ops.aten, name.split(".", 1)[1])
    module, _, attr = name.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), attr)
    except ImportError:
        return False


def _known_names(name: str) -> list[str]:
    if name.startswith("aten."):
        import torch

        return [f"aten.{n}" for n in dir(torch.ops.aten)]
    module, _, _ = name.rpartition(".")
    try:
        return [f"{module}.{n}" for n in dir(importlib.import_module(module))]
    except ImportError:
        return []


# -- the snapshots against the suite -------------------------------------------------------------

# Recording is the expensive part of the check (a full run of the suite per variant), then
# collecting the suite (a pytest process). A clean result is kept on disk, keyed by the content of
# every input (the rubric, reference, suite, lock, snapshots and fixtures, and the engine's own
# source): building both zips, or the same sources from a copy of the project, records once. An
# edit to any input changes the key; a result with problems is never kept, so a failing suite is
# checked afresh every time. LMGRADE_CHECK_CACHE=0 (`check-suite --fresh`) turns the cache off.
CACHE_VAR = "LMGRADE_CHECK_CACHE"
_MEMO: dict[str, object] = {}
_ALL_INPUTS = ("reference", "suite", "snapshots", "fixtures")


def _inputs_fingerprint(assignment: Assignment, what: str = "record", parts: tuple[str, ...] = _ALL_INPUTS) -> str:
    """sha256 of the relative path and bytes of every file under ``parts``, and of the engine's."""
    import grader

    digest = hashlib.sha256(f"check-suite 1\0{what}\0{assignment.id}\0{sys.version}\n".encode())
    folders = {
        "engine": Path(grader.__file__).parent,
        "reference": assignment.reference_dir,
        "suite": assignment.suite_dir,
        "snapshots": assignment.snapshots_dir,
        "fixtures": assignment.fixtures_dir,
    }
    for label in ("engine", *parts):
        folder = folders[label]
        for path in sorted(folder.rglob("*")) if folder.is_dir() else ():
            if "__pycache__" in path.parts or not path.is_file() or (label == "engine" and path.suffix != ".py"):
                continue
            digest.update(f"{label}/{path.relative_to(folder).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _cache_file(key: str, kind: str = "record") -> Path | None:
    if os.environ.get(CACHE_VAR, "1") == "0":
        return None
    from grader.envs import cache_dir

    return cache_dir().parent / "check-suite" / f"{kind}-{key}.json"


def _cached(key: str, compute, keep, kind: str = "record"):
    """``compute()``, or what it returned before for this key (in this process, or on disk when
    ``keep`` said the result was clean). Results are JSON."""
    if key in _MEMO:
        return _MEMO[key]
    path = _cache_file(key, kind)
    if path is not None and path.is_file():
        try:
            _MEMO[key] = json.loads(path.read_text(encoding="utf-8"))["result"]
            return _MEMO[key]
        except (OSError, ValueError, KeyError):
            pass
    result = json.loads(json.dumps(compute()))
    _MEMO[key] = result
    if path is not None and keep(result):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"result": result}) + "\n", encoding="utf-8")
        partial.replace(path)
    return result


def snapshot_problems(assignment: Assignment) -> list[str]:
    """Record the reference afresh and compare with what is stored."""
    stored_root = assignment.snapshots_dir
    if not (stored_root / "manifest.json").is_file():
        return [f"no snapshots ({stored_root}/manifest.json missing): run `lmgrade record {assignment.id}`"]
    key = _inputs_fingerprint(assignment)
    return list(_cached(key, lambda: _record_and_compare(assignment, stored_root), keep=lambda found: not found))


def _record_and_compare(assignment: Assignment, stored_root: Path) -> list[str]:
    from grader.record import RecordError, record

    with tempfile.TemporaryDirectory(prefix="lmgrade-check-") as tmp:
        fresh_root = Path(tmp) / "snapshots"
        try:
            record(assignment, out=fresh_root)
        except RecordError as err:
            return [f"the reference fails its own suite, so nothing could be compared: {str(err)[:600]}"]
        return compare_snapshot_trees(assignment, stored_root, fresh_root)


def compare_snapshot_trees(assignment: Assignment, stored_root: Path, fresh_root: Path) -> list[str]:
    stored, fresh = _load_tree(stored_root), _load_tree(fresh_root)
    fix = f"run `lmgrade record {assignment.id}`"
    out: list[str] = []
    said: set[tuple[str, str]] = set()  # a variant's problem already said for the reference is not repeated
    for variant in sorted(set(stored) | set(fresh), key=lambda v: (v != "reference", v)):
        s_tests, f_tests = stored.get(variant, {}), fresh.get(variant, {})
        for test in sorted(set(s_tests) | set(f_tests)):
            s_keys, f_keys = s_tests.get(test, {}), f_tests.get(test, {})
            found = [f"the suite sends `{key}`, which was never recorded" for key in sorted(set(f_keys) - set(s_keys))]
            found += [
                f"`{key}` is recorded but the suite no longer sends it" for key in sorted(set(s_keys) - set(f_keys))
            ]
            found += [
                f"`{key}`: {p}"
                for key in sorted(set(s_keys) & set(f_keys))
                for p in _entry_differences(s_keys[key], f_keys[key])
            ]
            for problem in found:
                if (test, problem) in said:
                    continue
                said.add((test, problem))
                where = test + ("" if variant == "reference" else f" (variant {variant})")
                out.append(f"{where}: {problem}: {fix}")
    evidence = fresh.get("reference", {})
    for spec in assignment.tests:
        if spec.points <= 0 or assignment.is_child_judged(spec.test_id):
            continue
        cases = [t for t in evidence if t == spec.test_id or t.startswith(spec.test_id + "[")]
        if not cases or not all(evidence[t] for t in cases):
            out.append(
                f"{spec.test_id} ({spec.points:g} points) sends no value the grader can check, so it "
                "earns nothing: add snapshot.check or snapshot.judge (docs/engine.md)"
            )
    return out


def _entry_differences(stored: dict, fresh: dict) -> list[str]:
    out = []
    for field, what in (
        ("rtol", "rtol"),
        ("atol", "atol"),
        ("hint", "hint"),
        ("rule", "rule"),
        ("params", "rule parameters"),
        ("dtypes", "accepted dtypes"),
    ):
        if stored["meta"].get(field) != fresh["meta"].get(field):
            out.append(
                f"the test code says {what} {fresh['meta'].get(field)!r}, the snapshot holds "
                f"{stored['meta'].get(field)!r}"
            )
    if _mask_of(stored) != _mask_of(fresh):
        out.append("the test code's mask differs from the recorded one")
    if not _same_values(stored, fresh):
        out.append("the reference's values changed since they were recorded")
    return out


def _mask_of(entry: dict):
    ref = entry["meta"].get("mask")
    return None if ref is None else entry["arrays"].get(ref, np.zeros(0)).tobytes()


def _same_values(a: dict, b: dict) -> bool:
    from grader.compare import Tolerance, compare

    meta = a["meta"]
    tol = Tolerance(meta.get("rtol", 0.0), meta.get("atol", 0.0))
    if meta.get("rule"):  # a rule's recorded value is its anchor only when the test compares it
        return True
    return not compare(meta["tree"], a["arrays"], b["meta"]["tree"], b["arrays"], tol=tol, reveal=True)


def _load_tree(root: Path) -> dict:
    """{variant: {test id: {key: {"meta": entry, "arrays": arrays}}}}"""
    from safetensors.numpy import load_file

    out: dict = {}
    for variant_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        tests: dict = {}
        for meta_path in sorted(variant_dir.rglob("*.json")):
            module = meta_path.relative_to(variant_dir).with_suffix("").as_posix()
            arr_path = meta_path.with_suffix(".safetensors")
            arrays = load_file(str(arr_path)) if arr_path.is_file() else {}
            for name, keys in json.loads(meta_path.read_text(encoding="utf-8"))["tests"].items():
                tests[f"{module}.py::{name}"] = {k: {"meta": e, "arrays": arrays} for k, e in keys.items()}
        out[variant_dir.name] = tests
    return out


# -- mutants -------------------------------------------------------------------------------------


def mutant_problems(assignment: Assignment, *, grade_them: bool, jobs: int = 2) -> list[str]:
    from grader.mutants import grade_mutants, list_mutants

    names = list_mutants(assignment)
    out = []
    if len(names) < assignment.min_mutants:
        out.append(
            f"{len(names)} mutants (the minimum is {assignment.min_mutants}): add known-buggy submissions to "
            f"{assignment.mutants_file.relative_to(assignment.root).as_posix()}"
        )
    if grade_them:
        for result in grade_mutants(assignment, jobs=jobs):
            if result.score >= result.max_score:
                out.append(f"mutant {result.name} keeps full marks ({result.description})")
            elif result.report.evidence_score >= result.max_score:
                out.append(
                    f"mutant {result.name} would keep full marks by reporting every test as passed: "
                    "some of its failures are decided only inside the test process"
                )
    return out
