"""The autograder and handout zips, end to end: unpacked as Gradescope and a student would.

Everything runs on ``mila_ift6135_a2``, the cheapest real assignment to grade (`lmgrade grade
<id> reference/<id>` on 2 idle cores: mila_ift6135_a2 7.2 s, cmu_10423_hw3 11.0 s,
cmu_11667_a2 11.6 s, duke_ece661_hw3 20.3 s), except the check of the handout's public
snapshots, which mila's suite does not have (cmu_10423_hw3, built only). Every assignment's zips
are checked for the reference's files. No test here needs the toy assignment, whose set-up
(recording its snapshots) would cost each xdist worker that runs one of these tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from grader.assignment import RubricError, list_assignments, load_assignment
from grader.build import (
    PARENT_LOCK,
    BuildError,
    build_autograder,
    build_handout,
    handout_names,
    public_rubric,
    reference_only_hashes,
)
from grader.envs import CourseEnvError, cache_dir, read_lock
from grader.mutants import edited_files, list_mutants
from grader.results import validate

E2E = "mila_ift6135_a2"
E2E_MUTANT = "ln_unbiased_variance"  # gpt1_solution.py: LayerNorm with the unbiased variance
E2E_FILES = ("lstm_solution.py", "gpt1_solution.py")  # what a student uploads
PYTEST = Path(sys.executable).with_name("pytest")  # the `pytest` command of this environment

# A submission that attacks the grader instead of doing the work. At import it writes a forged
# results.json (1000 points) to every place it can guess: Gradescope's path, the root the test
# gives run_autograder, and the --results argument of every process above it; then it ends its
# own process with os._exit(0), which pytest cannot catch. Every later import (in the test
# processes the grader starts for the remaining tests) forges again and exits through
# SystemExit: one hard exit is enough to prove the point, and each one costs a new process.
ADVERSARIAL = """
import json, os
FORGED = {"score": 1000.0, "output": "FORGED", "tests": [{"name": "forged", "score": 1000.0, "max_score": 1.0}]}
targets = {"/autograder/results/results.json"}
if os.environ.get("LMGRADE_AUTOGRADER_ROOT"):
    targets.add(os.path.join(os.environ["LMGRADE_AUTOGRADER_ROOT"], "results", "results.json"))
pid = os.getpid()
while pid > 1:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\\0")
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        break
    targets.update(args[i + 1].decode() for i, a in enumerate(args[:-1]) if a == b"--results")
for path in targets:
    try:
        with open(path, "w") as f:
            json.dump(FORGED, f)
    except OSError:
        pass
marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".exited-once")
if not os.path.exists(marker):
    try:
        open(marker, "w").close()
    except OSError:
        pass
    os._exit(0)
raise SystemExit(0)
"""


def unzip(archive: Path, dest: Path) -> Path:
    """Extract keeping the Unix permission bits (zipfile.extractall drops them)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, dest))
            mode = info.external_attr >> 16
            if mode:
                path.chmod(mode & 0o777)
    return dest


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what pytest, xdist or lmgrade set in it (but with the course
    environments' cache, which `make install` filled)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "LMGRADE_", "PYTHONPATH", "COV_CORE"))}
    env["LMGRADE_ENV_CACHE"] = str(cache_dir())
    env["OMP_NUM_THREADS"] = "1"  # 2 shared cores: torch's thread pool would only fight
    env.update(extra)
    return env


PUBLIC_SNAPSHOTS = "cmu_10423_hw3"  # an assignment whose public tests check values


def project_copy(assignment_id: str, dest: Path) -> Path:
    """The parts of this project one assignment needs, copied (to break them on purpose)."""
    source = load_assignment(assignment_id)
    for part in ("reference", "student_template", "test_suites", "fixtures"):
        shutil.copytree(source.root / part / assignment_id, dest / part / assignment_id)
    for kind in ("mutants", "alternatives"):  # check-suite's minimum of mutants holds for the copy too
        edits = source.root / "tests" / kind / f"{assignment_id}.yaml"
        if edits.is_file():
            (dest / "tests" / kind).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(edits, dest / "tests" / kind / edits.name)
    return dest


@pytest.fixture(scope="module")
def e2e():
    return load_assignment(E2E)


@pytest.fixture(scope="module")
def e2e_autograder_zip(e2e, tmp_path_factory) -> Path:
    return build_autograder(e2e, tmp_path_factory.mktemp("build") / "autograder.zip")


@pytest.fixture(scope="module")
def e2e_handout_zip(e2e, tmp_path_factory) -> Path:
    return build_handout(e2e, tmp_path_factory.mktemp("build") / "handout.zip")


# -- the autograder zip: what it holds ------------------------------------------------------------


def test_autograder_zip_layout(e2e_autograder_zip):
    with zipfile.ZipFile(e2e_autograder_zip) as zf:
        names = set(zf.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
    assert {
        "setup.sh",
        "run_autograder",
        "pyproject.toml",
        "README.md",
        PARENT_LOCK,
        "grader/runner.py",
        f"test_suites/{E2E}/environment.lock",
        "grader/templates/run_autograder.j2",
        f"test_suites/{E2E}/assignment.yaml",
        f"test_suites/{E2E}/hidden/test_lstm.py",
        f"student_template/{E2E}/lstm_solution.py",
        f"student_template/{E2E}/run_exp.py",
    } <= names
    assert any(n.startswith(f"fixtures/{E2E}/snapshots/reference/hidden/") for n in names)  # hidden snapshots ship
    assert not [n for n in names if n.startswith(("reference/", "tests/", "/")) or "/mutants/" in n or ".." in n]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111


def test_setup_script_installs_cpu_torch_then_exactly_the_locks(e2e, e2e_autograder_zip, tmp_path):
    root = unzip(e2e_autograder_zip, tmp_path)
    setup = (root / "setup.sh").read_text()
    course_lock = f"test_suites/{E2E}/environment.lock"
    assert "--no-deps --index-url https://download.pytorch.org/whl/cpu" in setup and '"torch==2.13.0"' in setup
    install = f'--no-deps -r "$SOURCE/{course_lock}" -r "$SOURCE/{PARENT_LOCK}"'
    assert setup.index('whl/cpu "torch') < setup.index(install)  # torch first: never the CUDA build
    assert setup.index(install) < setup.index('--no-deps --no-build-isolation "$SOURCE"') < setup.index("pip check")
    assert "current_interpreter_holds" in setup  # the venv is checked to hold every course pin
    assert "adduser --disabled-password" in setup and "student" in setup
    assert f'PY="python{e2e.environment.python}"' in setup  # the course environment's Python
    # The zip's course lock is the checkout's; the grading process's extra needs do not overlap it.
    course = read_lock(root / course_lock)
    assert course == e2e.environment.pins and course["torch"] == "2.13.0"
    parent = read_lock(root / PARENT_LOCK)
    assert parent and not set(parent) & set(course), set(parent) & set(course)
    both = {**course, **parent}
    assert {"numpy", "pytest", "safetensors", "pyyaml", "jsonschema", "rich", "setuptools"} <= both.keys()
    assert "lmgrade" not in both and all(re.fullmatch(r"[0-9][0-9A-Za-z.!]*", v) for v in both.values())
    assert course["numpy"].startswith("1.")  # the course's numpy (<2), not this venv's
    run = (root / "run_autograder").read_text()
    assert 'BUDGET="${LMGRADE_TIME_BUDGET:-555}"' in run and '--time-budget "$BUDGET"' in run  # 600 s - 45 s
    assert f'-I -m grader grade "{E2E}"' in run  # isolated mode: nothing from the submission's folder on sys.path
    for script in ("setup.sh", "run_autograder"):
        text = (root / script).read_text()
        assert "{{" not in text and "{%" not in text and "\r" not in text and text.startswith("#!/usr/bin/env bash")
        subprocess.run(["bash", "-n", str(root / script)], check=True)


def _buildable_assignments() -> list[str]:
    ids = []
    for aid in list_assignments():
        try:
            a = load_assignment(aid)
        except RubricError:
            continue  # a rubric being written; test_assignments reports it
        if a.template_dir.is_dir() and (a.snapshots_dir / "manifest.json").is_file():
            ids.append(aid)
    return ids


@pytest.mark.parametrize("assignment_id", _buildable_assignments())
def test_real_assignments_build_without_the_reference(assignment_id, tmp_path):
    """Every shipped assignment: both zips build and hold no reference file's content."""
    assignment = load_assignment(assignment_id)
    secret = reference_only_hashes(assignment)
    others = [o for o in list_assignments() if o != assignment_id]
    for archive in (
        build_autograder(assignment, tmp_path / "a.zip", stale_template_ok=True),
        build_handout(assignment, tmp_path / "h.zip", stale_template_ok=True),
    ):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            assert not [n for n in names if n.startswith("reference/")]
            assert not [n for n in names if any(o in n for o in others)]
            assert not {hashlib.sha256(zf.read(n)).hexdigest() for n in names} & secret.keys()
    with zipfile.ZipFile(tmp_path / "h.zip") as zf:
        assert not [n for n in zf.namelist() if "hidden" in n.split("/") and not n.startswith("grader/")]
        twins = set(assignment.notebooks.values())  # a notebook's .py source is not handed out
        for path in assignment.template_dir.rglob("*"):  # the template, every file as it is
            if path.is_file() and "__pycache__" not in path.parts and path.name not in twins:
                assert zf.read(path.relative_to(assignment.template_dir).as_posix()) == path.read_bytes(), path
        names = handout_names(assignment)
        assert {names["readme"], names["requirements"], "conftest.py", "pytest.ini"} <= set(zf.namelist())


def test_build_refuses_a_zip_that_would_hold_the_reference(tmp_path):
    """The last check before writing: a reference file smuggled into the fixtures stops the build."""
    mila = load_assignment(E2E, root=project_copy(E2E, tmp_path / "proj"))
    shutil.copyfile(mila.reference_dir / "lstm_solution.py", mila.fixtures_dir / "solution_copy.txt")
    for build in (build_autograder, build_handout):
        with pytest.raises(BuildError, match="reference solution's lstm_solution.py"):
            build(mila, tmp_path / "a.zip")
    assert not (tmp_path / "a.zip").exists()


def test_build_refuses_a_stale_template_or_snapshot(tmp_path):
    mila = load_assignment(E2E, root=project_copy(E2E, tmp_path / "proj"))
    lstm = mila.template_dir / "lstm_solution.py"
    lstm.write_text(lstm.read_text() + "# edited by hand\n")
    with pytest.raises(BuildError, match=f"out of sync.*lmgrade template {E2E}"):
        build_autograder(mila, tmp_path / "a.zip")
    build_autograder(mila, tmp_path / "a.zip", stale_template_ok=True)
    snapshot = next(p for p in mila.snapshots_dir.rglob("*.safetensors"))
    snapshot.write_bytes(snapshot.read_bytes()[:-1])
    with pytest.raises(BuildError, match=f"does not match the manifest.*lmgrade record {E2E}"):
        build_handout(mila, tmp_path / "h.zip", stale_template_ok=True)


def test_build_refuses_a_lock_that_is_missing_or_breaks_the_declared_ranges(tmp_path):
    proj = project_copy(E2E, tmp_path / "proj")
    mila = load_assignment(E2E, root=proj)
    lock = mila.environment.lock_path
    text = lock.read_text()
    assert "numpy==1.26.4" in text and "numpy>=1.19,<2" in mila.environment.packages
    lock.write_text(text.replace("numpy==1.26.4", "numpy==2.0.2"))  # edited after the rubric was loaded
    for build in (build_autograder, build_handout):
        with pytest.raises(
            BuildError, match=rf"numpy 2\.0\.2 does not satisfy numpy>=1\.19,<2 .*lmgrade env lock {E2E}"
        ):
            build(mila, tmp_path / "a.zip")
    with pytest.raises(RubricError, match=r"environment.lock: numpy 2\.0\.2 does not satisfy numpy>=1\.19,<2"):
        load_assignment(E2E, root=proj)  # and loading says so at once
    lock.write_text(text.replace("tqdm==", "# tqdm=="))
    with pytest.raises(RubricError, match=r"tqdm \(tqdm>=4\.49,<5\) is not in the lock"):
        load_assignment(E2E, root=proj)
    lock.unlink()
    for build in (build_autograder, build_handout):
        with pytest.raises(BuildError, match=rf"no test_suites/{E2E}/environment.lock: run `lmgrade env lock {E2E}`"):
            build(mila, tmp_path / "a.zip")
    assert not (tmp_path / "a.zip").exists()
    proc = _lmgrade(
        "build-autograder", E2E, "-o", str(tmp_path / "a.zip"), cwd=tmp_path, env={"LMGRADE_HOME": str(proj)}
    )
    assert proc.returncode == 1 and "environment.lock: run `lmgrade env lock" in proc.stderr, proc.stderr


def test_build_reports_a_pinned_version_that_does_not_install(tmp_path, monkeypatch):
    """A new lock is installed when the zip is built (the environment it names is built, once),
    so a pin pip cannot install stops the build, not a student's grading."""
    from grader import envs

    proj = project_copy(E2E, tmp_path / "proj")
    lock = proj / "test_suites" / E2E / "environment.lock"
    lock.write_text(lock.read_text().replace("tqdm==4.70.1", "tqdm==4.99.99"))
    mila = load_assignment(E2E, root=proj)
    monkeypatch.setenv("LMGRADE_ENV_CACHE", str(tmp_path / "cache"))
    calls = []

    def pip(venv, args, say, what):  # what pip says of a version no index has
        calls.append(args)
        if "-r" in args:
            raise CourseEnvError(f"pip failed while {what}: ERROR: No matching distribution found for tqdm==4.99.99")

    monkeypatch.setattr(envs, "_pip", pip)
    with pytest.raises(BuildError, match=r"does not install from .*environment.lock.*tqdm==4\.99\.99"):
        build_autograder(mila, tmp_path / "a.zip")
    assert any(str(lock) in args for args in calls) and not (tmp_path / "a.zip").exists()
    assert not [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]  # no half-built env


# -- run_autograder, as Gradescope runs it -------------------------------------------------------


def _gradescope_root(autograder_zip: Path, base: Path, files: dict[str, Path | str]) -> Path:
    """/autograder as Gradescope lays it out: source/ (the zip), submission/, results/.

    ``base`` must be open to other users: under root, lmgrade runs the tests as a uid of
    their own, which must be able to reach the suite in source/.
    """
    root = base / "autograder"
    unzip(autograder_zip, root / "source")
    (root / "submission").mkdir()
    (root / "results").mkdir()
    for name, content in files.items():
        target = root / "submission" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_text(content)
    return root


def _run_autograder(root: Path, python: str = sys.executable, **env: str) -> dict:
    proc = subprocess.run(
        [str(root / "source" / "run_autograder")],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(LMGRADE_AUTOGRADER_ROOT=str(root), LMGRADE_PYTHON=python, **env),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(os.listdir(root / "results")) == ["results.json"], proc.stdout
    results = json.loads((root / "results" / "results.json").read_text())
    validate(results)
    return results


def _by_test(results: dict) -> dict[str, dict]:
    return {t["extra_data"]["test_id"]: t for t in results["tests"]}


def test_run_autograder_end_to_end(e2e, e2e_autograder_zip, shared_tmp):
    """Reference, template, a mutant and an adversarial submission, graded by run_autograder."""
    ref, mutant = e2e.reference_dir, next(m for m in list_mutants(e2e) if m.name == E2E_MUTANT)
    cases = {
        "reference": {name: ref / name for name in E2E_FILES},
        "template": {p.relative_to(e2e.template_dir).as_posix(): p for p in e2e.template_dir.rglob("*") if p.is_file()},
        "mutant": {**{name: ref / name for name in E2E_FILES}, **edited_files(mutant, ref)},
        "adversarial": {"gpt1_solution.py": ref / "gpt1_solution.py", "lstm_solution.py": ADVERSARIAL},
    }
    base = shared_tmp / "e2e"
    roots = {name: _gradescope_root(e2e_autograder_zip, base / name, files) for name, files in cases.items()}
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(roots, pool.map(_run_autograder, roots.values())))
    full = e2e.total_points
    for name, r in results.items():
        assert len(r["tests"]) >= len(e2e.tests), name  # every rubric test is reported
        assert r["extra_data"]["max_score"] == full, name
    assert results["reference"]["score"] == full, results["reference"]["output"]
    assert results["template"]["score"] == 0
    assert 0 < results["mutant"]["score"] < full
    lost = {tid for tid, t in _by_test(results["mutant"]).items() if t["score"] < t["max_score"]}
    assert lost and all("layernorm" in tid.lower() or "gpt1" in tid for tid in lost), lost

    # The adversarial submission: nothing it forged survives, and it gets exactly what its honest
    # part (the reference gpt1_solution.py) deserves: every test of the other file, nothing for lstm.
    adversarial = results["adversarial"]
    assert "FORGED" not in json.dumps(adversarial) and not any(t["name"] == "forged" for t in adversarial["tests"])
    honest = sum(t.points for t in e2e.tests if "lstm" not in t.test_id.split("::")[0])
    assert 0 < honest < full and adversarial["score"] == pytest.approx(honest)
    for tid, t in _by_test(adversarial).items():
        expected = 0 if "lstm" in tid.split("::")[0] else t["max_score"]
        assert t["score"] == expected, (tid, t["output"])


def test_run_autograder_writes_results_when_lmgrade_cannot_run(e2e_autograder_zip, shared_tmp):
    root = _gradescope_root(e2e_autograder_zip, shared_tmp / "no-python", {"lstm_solution.py": "x = 1\n"})
    results = _run_autograder(root, python="/bin/false")  # lmgrade fails at once
    assert results["score"] == 0 and "could not be graded" in results["output"]
    results = _run_autograder(root, python=str(root / "no-such-python"))  # not even Python: the static fallback
    assert results["score"] == 0 and results["tests"] == [] and "could not be graded" in results["output"]


def test_run_autograder_keeps_partial_results_at_the_time_budget(e2e, e2e_autograder_zip, shared_tmp):
    lstm = (e2e.reference_dir / "lstm_solution.py").read_text()
    hang = lstm.replace(
        "    def forward(self, inputs, hidden_states):",
        "    def forward(self, inputs, hidden_states):\n        import time; time.sleep(300)",
        1,
    )
    assert "time.sleep" in hang
    files = {"lstm_solution.py": hang, "gpt1_solution.py": e2e.reference_dir / "gpt1_solution.py"}
    root = _gradescope_root(e2e_autograder_zip, shared_tmp / "budget", files)
    results = _run_autograder(root, LMGRADE_TIME_BUDGET="15")
    assert "time budget" in results["output"] or "ran out of time" in results["output"], results["output"]
    assert results["score"] < e2e.total_points and len(results["tests"]) >= len(e2e.tests)


# -- the handout zip ------------------------------------------------------------------------------


def test_handout_layout_is_public_only(tmp_path):
    assignment = load_assignment(PUBLIC_SNAPSHOTS)
    archive = build_handout(assignment, tmp_path / "handout.zip")
    names_ = handout_names(assignment)
    suite = f"test_suites/{assignment.id}"
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        rubric = yaml.safe_load(zf.read(f"{suite}/assignment.yaml"))
        manifest = json.loads(zf.read(f"fixtures/{assignment.id}/snapshots/manifest.json"))
        readme = zf.read(names_["readme"]).decode()
        conftest = zf.read("conftest.py").decode()
    public_files = {
        p.relative_to(assignment.suite_dir).as_posix() for p in (assignment.suite_dir / "public").rglob("*.py")
    }
    assert {"conftest.py", "pytest.ini", names_["readme"], names_["requirements"], "grader/plugin.py"} <= names
    with zipfile.ZipFile(archive) as zf:  # students install the course environment, as Gradescope does
        requirements = zf.read(names_["requirements"]).decode()
    pins = dict(line.split("==") for line in requirements.splitlines() if line and not line.startswith("#"))
    assert pins == assignment.environment.pins and f"Python {assignment.environment.python}" in readme
    assert {f"{suite}/{f}" for f in public_files} <= names
    assert not [n for n in names if "hidden" in n.split("/") and not n.startswith("grader/")]
    # the public snapshots, checksummed; the rubric and the manifest name public tests only
    assert manifest["files"] and all(f.split("/")[1] == "public" for f in manifest["files"])
    assert all(f"fixtures/{assignment.id}/snapshots/{f}" in names for f in manifest["files"])
    assert manifest["tests"] and all(t.startswith("public/") for t in manifest["tests"])
    tests = [t for q in rubric["questions"] for t in q["tests"]]
    assert tests and all(t.startswith("public/") for t in tests)
    assert not [p for rule in rubric.get("rules", []) for p in rule["tests"] if p.startswith("hidden/")]
    assert rubric == public_rubric(assignment)
    public_points = sum(t.points for t in assignment.tests if t.test_id.startswith("public/"))
    assert sum(q["points"] for q in rubric["questions"]) == public_points
    # the README: what to write, how to run the tests, and that hidden tests exist
    for name in assignment.modules:
        assert f"`{assignment.modules[name][0]}`" in readme
    assert "pytest" in readme and "hidden" in readme and "{{" not in readme and "{{" not in conftest


def _pytest_in(folder: Path, **env: str) -> subprocess.CompletedProcess:
    """A student's bare `pytest` in the unpacked folder, without this environment's pytest plugins."""
    return subprocess.run(
        [str(PYTEST)],
        check=False,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", **env),
    )


def test_handout_pytest_fails_cleanly_on_the_template(e2e_handout_zip, tmp_path):
    handout = unzip(e2e_handout_zip, tmp_path / "handout")
    proc = _pytest_in(handout)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr  # tests failed: not 2-5 (interrupted, usage, none collected)
    assert re.search(r"\b10 failed\b", out) and " passed" not in out, out
    assert f"engine in {handout.resolve() / 'grader'}" in out  # the vendored engine, not this checkout's
    # One message per failure, naming the student's file and line; no traceback through the
    # grader, no path of the grader's staged copy.
    assert "not implemented yet: NotImplementedError (raised in lstm_solution.py, line" in out, out
    assert "not implemented yet: NotImplementedError (raised in gpt1_solution.py, line" in out, out
    assert "Traceback" not in out and "lmgrade-stage" not in out and "grader/plugin.py" not in out, out
    assert "site-packages" not in out and "ignored" not in out, out  # nor a note about the handout's own files


def test_handout_pytest_passes_with_the_reference_files(e2e_handout_zip, tmp_path):
    handout = unzip(e2e_handout_zip, tmp_path / "handout")
    requirements = (handout / handout_names(load_assignment(E2E))["requirements"]).read_text()
    for name in E2E_FILES:  # the student's finished files over the template's
        shutil.copyfile(load_assignment(E2E).reference_dir / name, handout / name)
    proc = _pytest_in(handout, PYTHONPROFILEIMPORTTIME="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert re.search(r"\b10 passed\b", proc.stdout) and "failed" not in proc.stdout, proc.stdout
    # Everything the run imported is installed by the README's two pip commands.
    missing = _distributions_imported(proc.stderr) - _closure(_pinned_names(requirements) | {"torch"})
    assert not missing, f"the handout's requirements.txt lacks {sorted(missing)}"


def _pinned_names(requirements: str) -> set[str]:
    return {
        _canonical(re.split(r"[=<>!~;\[ ]", line, maxsplit=1)[0])
        for line in requirements.splitlines()
        if line.strip() and not line.startswith("#")
    }


def _distributions_imported(importtime_log: str) -> set[str]:
    """Distributions whose modules a ``PYTHONPROFILEIMPORTTIME`` log shows imported, except
    what the interpreter itself imports at start-up (this environment's .pth hooks)."""

    def top_modules(log: str) -> set[str]:
        return {
            line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in log.splitlines()
            if line.startswith("import time:") and "|" in line
        }

    startup = subprocess.run(
        [sys.executable, "-c", "pass"],
        check=False,
        capture_output=True,
        text=True,
        env=clean_env(PYTHONPROFILEIMPORTTIME="1"),
    ).stderr
    names = top_modules(importtime_log) - top_modules(startup) - set(sys.stdlib_module_names)
    owners = metadata.packages_distributions()
    return {_canonical(d) for name in names for d in owners.get(name, [])} - {"lmgrade"}


def _closure(names: set[str]) -> set[str]:
    """``names`` and every distribution they require (for this Python and platform)."""
    from packaging.requirements import Requirement

    seen, todo = set(), list(names)
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# -- the command line -----------------------------------------------------------------------------


def _lmgrade(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grader", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(COLUMNS="80", **(env or {})),
        timeout=120,
    )


def test_cli_builds_both_zips_and_reports_bad_input_in_one_line(tmp_path):
    proc = _lmgrade("build-handout", E2E, "-o", str(tmp_path / "out" / "handout.zip"))
    assert proc.returncode == 0 and "handout zip written to" in proc.stdout, proc.stderr
    assert zipfile.is_zipfile(tmp_path / "out" / "handout.zip")
    proc = _lmgrade("build-autograder", E2E, cwd=tmp_path)  # default name in the current folder
    assert proc.returncode == 0 and (tmp_path / f"{E2E}-autograder.zip").is_file(), proc.stderr
    for args in (
        ("build-autograder", "no_such_assignment"),
        ("build-handout", "no_such_assignment"),
        ("build-handout", E2E, "-o", "/proc/no/handout.zip"),
        ("build-autograder", E2E, "--time-limit", "10", "-o", str(tmp_path / "x.zip")),
    ):
        proc = _lmgrade(*args)
        assert proc.returncode != 0, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, (
            args,
            proc.stderr,
        )
    assert "unknown assignment 'no_such_assignment'" in _lmgrade("build-handout", "no_such_assignment").stderr
