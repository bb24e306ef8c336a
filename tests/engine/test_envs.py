"""Course environments (grader/envs.py): declared ranges, locks, the cache, and the test
process really running in the course's versions.

Nothing here builds an environment: the ones `make install` built (.lmgrade/envs) are reused,
and the tests that would build one replace the build with a stand-in.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from grader import envs
from grader.assignment import RubricError, list_assignments, load_assignment
from grader.envs import (
    CHILD_REQUIREMENTS,
    MARKER,
    CourseEnvError,
    child_python_prefix,
    child_readable_paths,
    engine_dir,
    ensure_environment,
    environment_key,
)

TOY = Path(__file__).parents[1] / "engine_toy"
SMALLEST = "mila_ift6135_a2"  # the course environment with the fewest packages
PANDAS_2 = "duke_ece661_hw3"  # transformers 4.x and pandas 2.x, where lmgrade's own venv has 5.x and 3.x


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    """Each test finds environments itself (the module caches what it found per process)."""
    monkeypatch.setattr(envs, "_memo", {})
    monkeypatch.delenv(envs.ENV_VAR, raising=False)


def toy_with_environment(dest: Path, *, like: str = SMALLEST, edit=None, lock_edit=None) -> Path:
    """The toy project, declaring the environment of the real assignment ``like`` (its lock too)."""
    shutil.copytree(TOY, dest)
    source = load_assignment(like)
    rubric = dest / "test_suites" / "toy" / "assignment.yaml"
    data = yaml.safe_load(rubric.read_text())
    data["environment"] = {
        "python": source.environment.python,
        "packages": list(source.environment.packages),
    }
    if edit:
        edit(data)
    rubric.write_text(yaml.safe_dump(data, sort_keys=False))
    lock = source.environment.lock_path.read_text()
    (rubric.parent / "environment.lock").write_text(lock_edit(lock) if lock_edit else lock)
    return dest


# -- every real assignment ----------------------------------------------------------------------


@pytest.mark.parametrize("assignment_id", list_assignments())
def test_every_assignment_declares_a_locked_semester_environment(assignment_id):
    a = load_assignment(assignment_id)  # loading checks the lock against the declared ranges
    env = a.environment
    assert env is not None and env.pins, f"{assignment_id} declares no locked course environment"
    assert env.pins["torch"] == "2.13.0"
    assert not [name for name in env.pins if name.startswith("nvidia-")]  # the CPU build only
    for text in env.packages:  # the semester's ranges: each bounded above, so no later major slips in
        assert any(spec.operator in ("<", "<=", "==", "~=") for spec in Requirement(text).specifier), text
    for text in CHILD_REQUIREMENTS:  # what the engine's test process imports
        assert Requirement(text).name.replace("_", "-").lower() in env.pins, text
    assert "lmgrade" not in env.pins


def test_the_2025_course_environment_has_transformers_4_and_pandas_2():
    """The issue's two facts: transformers 5 rejects TrainingArguments(evaluation_strategy=...)
    (removed in 4.51), and pandas 3's Arrow strings break `df[col].values` in sklearn."""
    pins = load_assignment(PANDAS_2).environment.pins
    major_minor = tuple(int(x) for x in pins["transformers"].split(".")[:2])
    assert (4, 46) <= major_minor < (4, 51), pins["transformers"]
    assert pins["pandas"].startswith("2.")


SEMESTER_IDIOMS = """
import warnings
import pandas as pd
from sklearn.model_selection import train_test_split
from transformers import TrainingArguments

df = pd.DataFrame({"review": [f"text {i}" for i in range(20)],
                   "sentiment": ["positive", "negative"] * 10})
x, y = df["review"].values, df["sentiment"].values
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    args = TrainingArguments(output_dir=OUT, evaluation_strategy="epoch", overwrite_output_dir=True,
                             logging_dir=OUT + "/logs", report_to="none")
print(len(x_train), args.eval_strategy.value)
"""


def test_the_2025_notebooks_idioms_run_in_their_course_environment(tmp_path):
    """What real Duke students wrote, which lmgrade's own venv rejects, runs in the course's."""
    python = ensure_environment(load_assignment(PANDAS_2))
    script = SEMESTER_IDIOMS.replace("OUT", repr(str(tmp_path)))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [str(python), "-I", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.split() == ["16", "epoch"], out.stderr[-2000:]
    here = subprocess.run(
        [sys.executable, "-I", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )
    assert here.returncode != 0  # pandas 3 / transformers 5: the failures the issue measured


# -- declaring and locking ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lock_edit", "edit", "message"),
    [
        (
            lambda t: t.replace("numpy==1.26.4", "numpy==2.0.2"),
            None,
            (
                r"environment.lock: numpy 2\.0\.2 does not satisfy numpy>=1\.19,<2 "
                r"\(assignment.yaml\).*lmgrade env lock toy"
            ),
        ),
        (
            lambda t: t.replace("tqdm==", "# tqdm=="),
            None,
            r"tqdm \(tqdm>=4\.49,<5\) is not in the lock",
        ),
        (
            lambda t: t.replace("pytest-timeout==", "# pytest-timeout=="),
            None,
            r"pytest-timeout \(pytest-timeout>=2\.3\) is not in the lock",
        ),
        (
            lambda t: t.replace("pytest==9", "pytest==7"),
            None,
            r"pytest 7\.\S+ does not satisfy pytest>=8 \(the engine\)",
        ),
        (
            lambda t: t + "einops>=0.6\n",
            None,
            r"line \d+: 'einops>=0.6' is not an exact `name==version` pin",
        ),
        (
            None,
            lambda d: d["environment"]["packages"].append("torch>=2.14"),
            r"torch is torch==2\.13\.0 \(the CPU build\) in every environment",
        ),
        (
            None,
            lambda d: d["environment"].update(python="3"),
            r"environment.python must be a Python version",
        ),
        (None, lambda d: d["environment"]["packages"].append("numpy<3"), r"lists numpy twice"),
        (
            None,
            lambda d: d.update(requirements=["numpy"]),
            r"'requirements' was replaced by 'environment'",
        ),
    ],
)
def test_a_lock_or_declaration_that_does_not_hold_is_refused_naming_the_package(tmp_path, lock_edit, edit, message):
    root = toy_with_environment(tmp_path / "proj", edit=edit, lock_edit=lock_edit)
    with pytest.raises(RubricError, match=message):
        load_assignment("toy", root=root)


def test_a_missing_lock_loads_but_cannot_be_used(tmp_path):
    root = toy_with_environment(tmp_path / "proj")
    (root / "test_suites" / "toy" / "environment.lock").unlink()
    toy = load_assignment("toy", root=root)
    assert toy.environment.pins is None
    with pytest.raises(CourseEnvError, match=r"no .*environment.lock: run `lmgrade env lock toy`"):
        ensure_environment(toy)


def test_relocking_loads_a_stale_lock():
    """`lmgrade env lock` loads the rubric without checking the lock it is about to replace."""
    suite = load_assignment(SMALLEST).suite_dir
    declared = {"python": "3.11", "packages": ["numpy>=2"]}
    stale = envs.parse_environment(declared, SMALLEST, suite, "x", check_lock=False)
    expected = f"numpy {stale.pins['numpy']} does not satisfy numpy>=2 (assignment.yaml)"
    assert envs.lock_problems(stale) == [expected]
    with pytest.raises(ValueError, match="numpy>=2"):
        envs.parse_environment(declared, SMALLEST, suite, "x")


def test_the_cache_key_is_the_pins_and_the_python_version(tmp_path):
    pins = load_assignment(SMALLEST).environment.pins
    shuffled = dict(reversed(list(pins.items())))
    assert environment_key(pins, "3.11") == environment_key(shuffled, "3.11")
    assert environment_key(pins, "3.11") != environment_key(pins, "3.12")
    assert environment_key(pins, "3.11") != environment_key({**pins, "tqdm": "4.66.0"}, "3.11")
    lock = tmp_path / "environment.lock"
    lock.write_text("# another header\n" + "\n".join(f"{n}=={v}  # why" for n, v in shuffled.items()) + "\n")
    assert envs.read_lock(lock) == pins  # comments and order do not change the key


# -- the cache -----------------------------------------------------------------------------------


def _no_build(*args, **kwargs):
    raise AssertionError("a cached environment was built again")


def test_identical_locks_share_one_environment_never_rebuilt(tmp_path, monkeypatch):
    mila = load_assignment(SMALLEST)
    python = ensure_environment(mila)  # built by `make install`
    marker = python.parent.parent / MARKER
    assert marker.is_file() and python.parent.parent.parent == envs.cache_dir()
    built_at = marker.stat().st_mtime
    monkeypatch.setattr(envs, "build_environment", _no_build)
    monkeypatch.setattr(envs, "_memo", {})
    toy = load_assignment("toy", root=toy_with_environment(tmp_path / "proj", lock_edit=lambda t: "# a copy\n" + t))
    assert ensure_environment(toy) == python  # same pins, same environment
    assert ensure_environment(toy) == python and marker.stat().st_mtime == built_at
    assert json.loads(marker.read_text())["key"] == toy.environment.key


def test_parallel_callers_build_an_environment_once(tmp_path, monkeypatch):
    """Threads (and, through the same flock, processes) wait for the one build in progress."""
    monkeypatch.setenv(envs.CACHE_VAR, str(tmp_path / "cache"))
    root = toy_with_environment(tmp_path / "proj", lock_edit=lambda t: t.replace("tqdm==", "tqdm==4.66.0\n# "))
    toy = load_assignment("toy", root=root)
    builds = []

    def slow_build(env, target, progress=None):
        builds.append(target)
        time.sleep(0.5)
        (target / "bin").mkdir(parents=True)
        (target / MARKER).write_text("{}")

    monkeypatch.setattr(envs, "build_environment", slow_build)
    found = []
    threads = [threading.Thread(target=lambda: found.append(ensure_environment(toy))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(found) == 4 and len(set(found)) == 1
    assert found[0] == tmp_path / "cache" / toy.environment.key / "bin" / "python"


def test_an_assignment_without_environment_and_the_developer_escape_hatch_use_this_python(
    monkeypatch,
):
    toy = load_assignment("toy", root=TOY)  # the engine's toy declares none
    assert toy.environment is None and ensure_environment(toy) == Path(sys.executable)
    mila = load_assignment(SMALLEST)
    monkeypatch.setenv(envs.ENV_VAR, "current")
    assert ensure_environment(mila) == Path(sys.executable)
    monkeypatch.setenv(envs.ENV_VAR, "yes")
    with pytest.raises(CourseEnvError, match="LMGRADE_ENV='yes' is not understood"):
        ensure_environment(mila)


# -- the test process ----------------------------------------------------------------------------


def test_the_engine_reaches_the_environment_through_its_own_folder_only():
    mila = load_assignment(SMALLEST)
    folder = engine_dir()
    assert [p.name for p in folder.iterdir()] == ["grader"]
    assert (folder / "grader").resolve() == Path(envs.__file__).resolve().parent
    python, *rest = child_python_prefix(mila)
    probe = "import importlib.util as u; print(u.find_spec('grader'))"
    alone = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, check=True)
    assert alone.stdout.strip() == "None"  # the environment does not hold lmgrade
    script = rest[rest.index("-c") + 1].replace(
        "import pytest; raise SystemExit(pytest.main())",
        "import grader, numpy; print(grader.__file__, numpy.__version__)",
    )
    shown = subprocess.run(
        [python, "-I", "-c", script, *rest[rest.index("-c") + 2 :]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert shown == [str(folder / "grader" / "__init__.py"), mila.environment.pins["numpy"]]
    readable = child_readable_paths(mila)
    assert folder in readable and Path(python).parent.parent in readable


@pytest.fixture(scope="module")
def version_toy(shared_tmp) -> Path:
    """A one-test assignment in the 2025 course environment: its test checks the major versions
    of pandas and transformers that the submission's module sees, recorded from the reference."""
    root = shared_tmp / "versiontoy"
    suite = root / "test_suites" / "versions"
    (suite / "public").mkdir(parents=True)
    (root / "reference" / "versions").mkdir(parents=True)
    source = load_assignment(PANDAS_2).environment
    (suite / "assignment.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "versions",
                "title": "library versions",
                "modules": {"libs": ["libs.py"]},
                "files_required": ["libs.py"],
                "timeout": 120,
                "environment": {"python": source.python, "packages": list(source.packages)},
                "questions": [
                    {
                        "number": "1",
                        "name": "versions",
                        "tests": {"public/test_libs.py::test_majors": 1},
                    }
                ],
            }
        )
    )
    shutil.copyfile(source.lock_path, suite / "environment.lock")
    (suite / "public" / "test_libs.py").write_text(
        "def test_majors(sub, snapshot):\n    snapshot.check('majors', sub.libs.majors())\n"
    )
    (root / "reference" / "versions" / "libs.py").write_text(
        "import pandas\nimport transformers\n\n\ndef majors():\n"
        "    return [int(pandas.__version__.split('.')[0]),\n"
        "            int(transformers.__version__.split('.')[0])]\n"
    )
    from grader.record import record

    record(load_assignment("versions", root=root))
    return root


def test_the_child_runs_in_the_course_environment(version_toy, monkeypatch):
    from grader.runner import grade

    a = load_assignment("versions", root=version_toy)
    report = grade(a, a.reference_dir)
    assert report.score == report.max_score == 1, [t.message for t in report.tests]
    # the same test in lmgrade's own venv (pandas 3, transformers 5) finds other majors
    import pandas
    import transformers

    assert (pandas.__version__[0], transformers.__version__[0]) != ("2", "4")
    monkeypatch.setenv(envs.ENV_VAR, "current")
    report = grade(a, a.reference_dir)
    assert report.score == 0 and "majors" in report.tests[0].message, report.tests[0].message


def test_the_child_readable_paths_are_what_a_dropped_uid_needs(version_toy):
    """Under root, the uid the tests run as must reach the environment and the engine."""
    from grader.sandbox import is_root, open_to_others

    a = load_assignment("versions", root=version_toy)
    for path in child_readable_paths(a):
        assert path.exists(), path
        if is_root():
            assert open_to_others(path) and path.stat().st_mode & 0o004, path


def test_the_environment_command_prints_where_and_which_versions():
    proc = subprocess.run(
        [sys.executable, "-m", "grader", "env", SMALLEST],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", envs.CACHE_VAR: str(envs.cache_dir())},
    )
    mila = load_assignment(SMALLEST)
    assert proc.returncode == 0, proc.stderr
    assert str(ensure_environment(mila)) in proc.stdout.replace("\n", "")
    assert f"numpy {mila.environment.pins['numpy']}" in proc.stdout and "torch 2.13.0" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "grader", "env"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "name an assignment" in proc.stderr


def test_an_environment_holds_exactly_its_lock():
    """What `build_environment` checks after installing, and what `current_interpreter_holds`
    (the Gradescope venv) checks, on a real environment."""
    mila = load_assignment(SMALLEST)
    installed = envs.installed_versions(ensure_environment(mila))
    assert installed.keys() == mila.environment.pins.keys()  # nothing more: no pip, no lmgrade
    assert {n: v.split("+")[0] for n, v in installed.items()} == mila.environment.pins
    assert installed["torch"] == "2.13.0+cpu"
    assert not envs.current_interpreter_holds(mila.environment)  # lmgrade's own venv: numpy 2


def test_a_pip_failure_is_reported_by_its_own_verdict(tmp_path, monkeypatch):
    """What `lmgrade build-autograder` prints for a pin no index has (pip's words, shortened)."""
    stderr = (
        "Looking in links: /opt/wheels\n"
        "ERROR: Could not find a version that satisfies the requirement tqdm==4.99.99 (from versions:"
        " 4.66.0, 4.70.1)\nERROR: No matching distribution found for tqdm==4.99.99\n"
    )
    done = subprocess.CompletedProcess([], 1, stdout="", stderr=stderr)
    monkeypatch.setattr(envs.subprocess, "run", lambda *a, **k: done)
    with pytest.raises(CourseEnvError) as caught:
        envs._pip(tmp_path, ["install", "-r", "environment.lock"], lambda m: None, "installing it")
    message = str(caught.value)
    assert message.endswith("No matching distribution found for tqdm==4.99.99")
    assert "requirement tqdm==4.99.99" in message and "from versions" not in message
