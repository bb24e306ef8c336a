"""``lmgrade build-autograder`` and ``lmgrade build-handout``: the two zips a course ships.

The **autograder zip** is what Gradescope unpacks into ``/autograder/source``: ``setup.sh`` and
``run_autograder`` at its root (rendered from ``grader/templates/``), the engine's source, the
suite with its rubric and the course environment's lock, the assignment's fixtures with the
hidden snapshots, the student template (for provided files), and ``lmgrade-requirements.lock``
(what the grading process needs beyond the course environment). ``setup.sh`` installs exactly
the course's lock, then those, then lmgrade, into one venv. The **handout zip** is what students
download: the template's files at the root, the public tests, the public snapshots, the engine
vendored in ``grader/``, the course environment's lock as its requirements, and a
``conftest.py`` + ``pytest.ini`` that make a bare ``pytest`` test the folder itself.

Neither ever holds the reference solution, a mutant or another assignment: both are staged in
a temporary folder from an explicit list, and before a zip is written every staged file is
checked against the content of every reference file that differs from the template.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import yaml

from grader import __version__
from grader.assignment import Assignment, is_public, load_assignment
from grader.envs import (
    TORCH_REQUIREMENT,
    CourseEnvError,
    Environment,
    ensure_environment,
    lock_problems,
    read_lock,
)

TORCH_VERSION = TORCH_REQUIREMENT.split("==", 1)[1]
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
VENV = "/opt/lmgrade/venv"
GRADESCOPE_TIME_LIMIT = 600  # seconds, Gradescope's default per-submission limit
TIME_MARGIN = 45  # seconds kept for start-up, finalising results.json and upload
ENGINE_FILES = ("pyproject.toml", "README.md")  # README.md: pyproject names it as the readme
PARENT_LOCK = "lmgrade-requirements.lock"  # the grading process's needs beyond the course environment
SKIPPED_NAMES = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints", ".DS_Store", ".ruff_cache"}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip


class BuildError(RuntimeError):
    """The zip cannot be built as asked; the message says what to run or fix."""


# -- entry points ---------------------------------------------------------------------------------


def build_autograder(
    assignment: Assignment, out: Path, *, time_limit: int = GRADESCOPE_TIME_LIMIT, stale_template_ok: bool = False
) -> Path:
    """Write Gradescope's autograder zip for ``assignment`` to ``out``."""
    check_sources(assignment, stale_template_ok=stale_template_ok)
    env = course_environment(assignment, installable=True)
    with tempfile.TemporaryDirectory(prefix="lmgrade-build-") as tmp:
        root = Path(tmp) / "autograder"
        stage_autograder(assignment, root, time_limit=time_limit, env=env)
        assert_no_reference(assignment, root)
        return write_zip(root, out)


def build_handout(assignment: Assignment, out: Path, *, stale_template_ok: bool = False) -> Path:
    """Write the students' handout zip for ``assignment`` to ``out``."""
    check_sources(assignment, stale_template_ok=stale_template_ok)
    env = course_environment(assignment)
    with tempfile.TemporaryDirectory(prefix="lmgrade-handout-") as tmp:
        root = Path(tmp) / "handout"
        stage_handout(assignment, root, env=env)
        assert_no_reference(assignment, root)
        assert_no_hidden(assignment, root)
        return write_zip(root, out)


# -- checks before building -----------------------------------------------------------------------


def check_sources(assignment: Assignment, *, stale_template_ok: bool = False) -> None:
    """The suite must pass ``lmgrade check-suite``, the template be in sync with the reference and
    the snapshots match their manifest."""
    from grader.checksuite import check_suite
    from grader.template import check_template

    if not assignment.template_dir.is_dir():
        raise BuildError(f"{assignment.template_dir} does not exist: run `lmgrade template {assignment.id}`")
    problems = [] if stale_template_ok else check_template(assignment)
    if problems:
        raise BuildError(
            f"the student template of {assignment.id} is out of sync with the reference "
            f"({'; '.join(problems[:3])}): run `lmgrade template {assignment.id}`"
        )
    manifest_path = assignment.snapshots_dir / "manifest.json"
    if not manifest_path.is_file():
        raise BuildError(
            f"no snapshots for {assignment.id} ({manifest_path} missing): run `lmgrade record {assignment.id}`"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for rel, digest in manifest.get("files", {}).items():
        path = assignment.snapshots_dir / rel
        if not path.is_file() or _sha256(path.read_bytes()) != digest:
            raise BuildError(
                f"snapshot {rel} of {assignment.id} is missing or does not match the manifest: "
                f"run `lmgrade record {assignment.id}`"
            )
    try:
        found = check_suite(assignment)
    except CourseEnvError as err:  # check-suite re-records in the course environment
        lock = assignment.suite_dir / "environment.lock"
        raise BuildError(f"the course environment of {assignment.id} does not install from {lock}: {err}") from None
    suite = [p for p in found if stale_template_ok is False or not p.startswith("template:")]
    if suite:
        raise BuildError(
            f"`lmgrade check-suite {assignment.id}` found {len(suite)} problem(s):\n  " + "\n  ".join(suite)
        )


def course_environment(assignment: Assignment, *, installable: bool = False) -> Environment:
    """The assignment's course environment, its lock read again and checked against the
    declared ranges; with ``installable``, also built from the lock (or found built), which
    proves that every pinned version installs. Problems are reported here, not at grading."""
    env = assignment.environment
    rel = f"test_suites/{assignment.id}"
    if env is None:
        raise BuildError(
            f"{assignment.id} declares no course environment: add `environment:` (python, packages) "
            f"to {rel}/assignment.yaml and run `lmgrade env lock {assignment.id}` (docs/engine.md)"
        )
    if not env.lock_path.is_file():
        raise BuildError(f"{assignment.id} has no {rel}/{env.lock_path.name}: run `lmgrade env lock {assignment.id}`")
    try:
        env = replace(env, pins=read_lock(env.lock_path))  # as it is now, not as it was loaded
    except ValueError as err:
        raise BuildError(f"{err}: run `lmgrade env lock {assignment.id}`") from None
    problems = lock_problems(env)
    if problems:
        raise BuildError(f"{rel}/{env.lock_path.name}: {problems[0]}: run `lmgrade env lock {assignment.id}`")
    if installable:
        try:
            ensure_environment(replace(assignment, environment=env))
        except CourseEnvError as err:
            raise BuildError(
                f"the course environment of {assignment.id} does not install from {rel}/{env.lock_path.name}: {err}"
            ) from None
    return env


def reference_only_hashes(assignment: Assignment) -> dict[str, str]:
    """sha256 -> path of every non-empty reference file whose content the template does not share."""
    template = {_sha256(p.read_bytes()) for p in _files(assignment.template_dir)}
    out = {}
    for path in _files(assignment.reference_dir):
        data = path.read_bytes()
        digest = _sha256(data)
        if data.strip() and digest not in template:
            out[digest] = path.relative_to(assignment.reference_dir).as_posix()
    return out


def assert_no_reference(assignment: Assignment, root: Path) -> None:
    secret = reference_only_hashes(assignment)
    for path in _files(root):
        digest = _sha256(path.read_bytes())
        if digest in secret:
            raise BuildError(
                f"refusing to build: {path.relative_to(root)} has the content of the "
                f"reference solution's {secret[digest]}"
            )


def assert_no_hidden(assignment: Assignment, root: Path) -> None:
    """The handout holds no hidden test file, no hidden snapshot and no hidden test id."""
    for path in _files(root):
        rel = path.relative_to(root)
        if "hidden" in rel.parts and not rel.parts[0] == "grader":
            raise BuildError(f"refusing to build the handout: {rel} is part of the hidden suite")
    rubric = (root / handout_suite_path(assignment) / "assignment.yaml").read_text(encoding="utf-8")
    for spec in assignment.tests:
        if not is_public(spec.test_id) and spec.test_id in rubric:
            raise BuildError(f"refusing to build the handout: its rubric names hidden test {spec.test_id}")


# -- the autograder -------------------------------------------------------------------------------


def stage_autograder(
    assignment: Assignment, root: Path, *, time_limit: int = GRADESCOPE_TIME_LIMIT, env: Environment | None = None
) -> None:
    """Lay out what Gradescope will find in /autograder/source."""
    env = env or course_environment(assignment)
    project = assignment.root
    engine = Path(__file__).resolve().parent
    copy_tree(engine, root / "grader")
    for name in ENGINE_FILES:
        source = project / name if (project / name).is_file() else engine.parent / name
        if source.is_file():
            shutil.copyfile(source, root / name)
    for rel in (f"test_suites/{assignment.id}", f"fixtures/{assignment.id}", f"student_template/{assignment.id}"):
        copy_tree(project / rel, root / rel)
    (root / PARENT_LOCK).write_text(parent_requirements(assignment, env), encoding="utf-8")
    context = autograder_context(assignment, env, time_limit)
    write_script(root / "setup.sh", render("setup.sh.j2", **context))
    write_script(root / "run_autograder", render("run_autograder.j2", **context))


def autograder_context(assignment: Assignment, env: Environment, time_limit: int) -> dict:
    from grader.results import validate

    fallback = {
        "score": 0.0,
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [],
        "output": "Your submission could not be graded: the autograder's Python environment is broken. "
        "This is not a verdict on your code; the course staff can see the log and will regrade it.",
        "extra_data": {"lmgrade_error": "python could not run"},
    }
    validate(fallback)
    finalize = (Path(__file__).parent / "templates" / "finalize_results.py").read_text(encoding="utf-8")
    return {
        "assignment_id": assignment.id,
        "title": assignment.title,
        "venv": VENV,
        "python_version": env.python,
        "course_lock": f"test_suites/{assignment.id}/{env.lock_path.name}",
        "parent_lock": PARENT_LOCK,
        "n_pins": len(env.pins or {}),
        "torch_version": TORCH_VERSION,
        "torch_index": TORCH_CPU_INDEX,
        **time_plan(time_limit),
        "static_fallback": json.dumps(fallback),
        "finalize_py": finalize.rstrip("\n"),
    }


def time_plan(time_limit: int) -> dict:
    """How run_autograder spends Gradescope's time limit: lmgrade's own budget (it stops and
    writes what it has), then ``timeout``'s TERM and KILL if it is still running, and what is
    left to publish results.json before Gradescope gives up on the run."""
    margin = min(TIME_MARGIN, time_limit // 2)
    return {
        "time_limit": time_limit,
        "time_budget": time_limit - margin,
        "term_grace": margin // 3,
        "kill_grace": margin // 3,
    }


def parent_requirements(assignment: Assignment, env: Environment) -> str:
    """``lmgrade-requirements.lock``: what the grading process and lmgrade's build need beyond
    the course environment, pinned at the versions installed here.

    setup.sh installs these beside the course's lock in one venv, so each requirement of
    lmgrade (and of what it pulls in) on a distribution the course pins must accept the
    course's version: if not, the zip is not built."""
    pins = parent_pins(env.pins or {}, assignment.id)
    header = (
        f"# lmgrade {__version__} for {assignment.id}: what grading needs beyond the course environment\n"
        f"# ({env.lock_path.name}), pinned at the versions installed where `lmgrade build-autograder` ran\n"
        f"# (Python {sys.version_info.major}.{sys.version_info.minor}, {sys.platform}).\n"
    )
    return header + "".join(f"{name}=={version}\n" for name, version in pins.items())


def parent_pins(course: dict[str, str], assignment_id: str = "the course") -> dict[str, str]:
    """{distribution: version here} for lmgrade's dependencies and build backend and all they
    require, except what the course pins (after checking the course's version is accepted)."""
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    todo = [(r, "", "lmgrade") for r in engine_requirements() + build_requirements()]
    while todo:
        text, extra, needed_by = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = _canonical(req.name)
        if name == "lmgrade":
            continue
        if name in course:
            if not req.specifier.contains(course[name].split("+", 1)[0], prereleases=True):
                raise BuildError(
                    f"{assignment_id}'s course environment pins {name}=={course[name]}, but lmgrade's "
                    f"grading process ({needed_by}) needs {text}; they share one venv on Gradescope: "
                    f"change the course's range or lmgrade's requirement"
                )
            continue  # the course's version it is; its own requirements are in the course lock
        version = _installed_version(name)
        if version is None:
            raise BuildError(
                f"{name} ({text}, needed by {needed_by}) is not installed here, so its version cannot "
                "be pinned: run `make install`"
            )
        if name not in pins:
            pins[name] = version.split("+", 1)[0]
            todo += [(r, "", name) for r in metadata.requires(name) or []]
        todo += [(r, e, name) for e in req.extras for r in metadata.requires(name) or []]
    return dict(sorted(pins.items()))


def engine_requirements() -> list[str]:
    """lmgrade's own dependencies, from pyproject.toml (or the installed metadata)."""
    try:
        return list(_pyproject()["project"]["dependencies"])
    except (ImportError, OSError, KeyError):
        return [r for r in (metadata.requires("lmgrade") or []) if "extra ==" not in r]


def build_requirements() -> list[str]:
    """What building lmgrade itself needs (pyproject's ``build-system.requires``)."""
    try:
        return list(_pyproject()["build-system"]["requires"])
    except (ImportError, OSError, KeyError):
        return ["setuptools>=68"]


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8"))


# -- the handout ----------------------------------------------------------------------------------


def handout_suite_path(assignment: Assignment) -> str:
    """Where the public suite sits in the handout: the repository's own layout, so the plugin
    finds the rubric, fixtures and snapshots exactly as it does in a checkout."""
    return f"test_suites/{assignment.id}"


HANDOUT_OWN = ("conftest.py", "pytest.ini", "grader", "test_suites", "fixtures", "lmgrade.py")  # never in a template


def handout_names(assignment: Assignment) -> dict[str, str]:
    """File names of the handout's README and requirements: the usual ones, unless the template
    already has a file of that name (a course's own requirements.txt is a provided file)."""
    taken = {p.name for p in assignment.template_dir.iterdir()} if assignment.template_dir.is_dir() else set()
    return {
        "readme": "README.md" if "README.md" not in taken else "README-tests.md",
        "requirements": "requirements.txt" if "requirements.txt" not in taken else "requirements-tests.txt",
    }


def stage_handout(assignment: Assignment, root: Path, *, env: Environment | None = None) -> None:
    clash = [name for name in HANDOUT_OWN if (assignment.template_dir / name).exists()]
    if clash:
        raise BuildError(
            f"the template of {assignment.id} has {', '.join(clash)}, which the handout needs for "
            "its own test set-up: rename it in the reference"
        )
    # a notebook course gets its notebooks and no .py twins (the .py is only their source here)
    copy_tree(assignment.template_dir, root, skip_top=tuple(assignment.notebooks.values()))
    copy_tree(Path(__file__).resolve().parent, root / "grader")
    shutil.copyfile(_lmgrade_module(), root / "lmgrade.py")  # `import lmgrade; lmgrade.check(...)`
    suite = root / handout_suite_path(assignment)
    copy_tree(assignment.suite_dir / "public", suite / "public")
    for path in sorted(assignment.suite_dir.glob("*.py")):  # conftest, judges.py (rules), helpers
        shutil.copyfile(path, suite / path.name)
    (suite / "assignment.yaml").write_text(public_rubric_text(assignment), encoding="utf-8")
    stage_public_fixtures(assignment, root / "fixtures" / assignment.id)
    names = handout_names(assignment)
    env = env or course_environment(assignment)
    requirements = student_requirements(assignment, env, names["requirements"])
    (root / names["requirements"]).write_text(requirements, encoding="utf-8")
    context = handout_context(assignment, names, env)
    (root / "pytest.ini").write_text(render("handout_pytest.ini.j2", **context), encoding="utf-8")
    (root / names["readme"]).write_text(render("handout_README.md.j2", **context), encoding="utf-8")
    (root / "conftest.py").write_text("", encoding="utf-8")  # so that it is among the handout's own files below
    context["own_files"] = handout_hook_files(root)
    (root / "conftest.py").write_text(render("handout_conftest.py.j2", **context), encoding="utf-8")


def _lmgrade_module() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("lmgrade")
    if spec is None or not spec.origin:
        raise BuildError("the lmgrade module (lmgrade.py, `import lmgrade` in a notebook) is not installed here")
    return Path(spec.origin)


def handout_hook_files(root: Path) -> list[str]:
    """The handout's own files that grading would flag in a submission folder (its conftest.py,
    pytest.ini, the vendored grader/): a student's run says nothing about these."""
    try:
        from grader.submission import hook_files
    except ImportError:
        return sorted(HANDOUT_OWN)
    return hook_files(root)


def public_rubric(assignment: Assignment) -> dict:
    """The rubric with every hidden test, hidden rule pattern and reference path left out."""
    data = yaml.safe_load((assignment.suite_dir / "assignment.yaml").read_text(encoding="utf-8"))
    questions = []
    for q in data.get("questions", []):
        tests = {tid: _public_points(pts) for tid, pts in (q.get("tests") or {}).items() if is_public(str(tid))}
        if tests:
            questions.append({**q, "tests": tests, "points": sum(tests.values())})
    rules = []
    for rule in data.get("rules") or []:
        patterns = [p for p in rule.get("tests", []) if not str(p).startswith("hidden/")]
        if patterns:
            rules.append({**rule, "tests": patterns})
    public = {k: v for k, v in data.items() if k not in ("questions", "rules", "variants")}
    return {**public, "questions": questions, **({"rules": rules} if rules else {})}


def _public_points(entry) -> float:
    """A rubric entry's points; a public test's ``requires`` (hidden tests) stays out of the handout."""
    return float(entry["points"]) if isinstance(entry, dict) else float(entry)


def public_rubric_text(assignment: Assignment) -> str:
    header = (
        f"# The public part of {assignment.id}'s rubric, generated by `lmgrade build-handout`.\n"
        "# The hidden tests and their points are graded on Gradescope only.\n"
    )
    return header + yaml.safe_dump(public_rubric(assignment), sort_keys=False, allow_unicode=True)


def stage_public_fixtures(assignment: Assignment, dest: Path) -> None:
    """Every fixture but the snapshots, then each variant's public snapshots and their manifest."""
    from grader.snapshots import write_manifest

    source = assignment.fixtures_dir
    copy_tree(source, dest, skip_top=("snapshots",))
    snapshots = assignment.snapshots_dir
    manifest = json.loads((snapshots / "manifest.json").read_text(encoding="utf-8"))
    variants = list(manifest.get("variants") or [])
    for variant in variants:
        if (snapshots / variant / "public").is_dir():
            copy_tree(snapshots / variant / "public", dest / "snapshots" / variant / "public")
    (dest / "snapshots").mkdir(parents=True, exist_ok=True)
    write_manifest(dest / "snapshots", assignment.id, variants)


def student_requirements(assignment: Assignment, env: Environment, file_name: str = "requirements.txt") -> str:
    """The course environment's lock: students run what the course ran (and what Gradescope
    grades with). It holds what the vendored engine needs too (``CHILD_REQUIREMENTS``)."""
    lines = [
        f"# {assignment.id}: the course environment (Python {env.python}), every package pinned. Generated by",
        f"# `lmgrade build-handout` from test_suites/{assignment.id}/{env.lock_path.name}; Gradescope grades with it.",
        f"# Install torch first from {TORCH_CPU_INDEX} (see the README), then `pip install -r {file_name}`.",
    ]
    lines += [f"{name}=={version}" for name, version in sorted((env.pins or {}).items())]
    return "\n".join(lines) + "\n"


def handout_context(assignment: Assignment, names: dict[str, str], env: Environment) -> dict:
    from grader.assignment import is_public
    from grader.checksuite import collected_tests

    public = [t for t in assignment.tests if is_public(t.test_id)]
    hidden = [t for t in assignment.tests if not is_public(t.test_id)]
    written = {
        alias: names for alias, names in assignment.modules.items() if not set(names) <= set(assignment.provided)
    }  # a provided module is not written
    notebooks = [n for names in written.values() for n in names if n.endswith(".ipynb")]
    # a notebook course hands in its notebooks: the .py twins are only their source here
    shown = {
        alias: tuple(n for n in names if n not in assignment.notebooks.values()) or names
        for alias, names in written.items()
    }
    module_files = [names[0] for names in shown.values()]
    collected, _ = collected_tests(assignment)
    n_public = sum(1 for t in collected if is_public(t)) or len(public)
    manifest = assignment.snapshots_dir / "manifest.json"
    public_values = "public/" in manifest.read_text(encoding="utf-8") if manifest.is_file() else False
    return {
        "assignment_id": assignment.id,
        "title": assignment.title,
        "suite_path": handout_suite_path(assignment),
        "module_names": [" or ".join(f"`{n}`" for n in names) for names in shown.values()],
        "several_names": any(len(names) > 1 for names in shown.values()),
        "provided": list(assignment.provided),
        "required": [
            n for n in dict.fromkeys(module_files + list(assignment.files_required)) if n not in assignment.provided
        ],
        "notebooks": notebooks,
        "example_question": next(
            (q.number for q in assignment.questions if any(is_public(t.test_id) and t.points for t in q.tests)), "1"
        ),
        "questions": [
            (q.number, q.name, sum(t.points for t in q.tests if is_public(t.test_id)))
            for q in assignment.questions
            if any(is_public(t.test_id) for t in q.tests)
        ],
        "n_public": n_public,
        "n_hidden": len(hidden),
        "public_values": public_values,
        "public_points": f"{sum(t.points for t in public):g}",
        "hidden_points": f"{sum(t.points for t in hidden):g}",
        "total_points": f"{assignment.total_points:g}",
        "torch_version": TORCH_VERSION,
        "torch_index": TORCH_CPU_INDEX,
        "python_version": env.python,
        "requirements_file": (names or {}).get("requirements", "requirements.txt"),
        "readme_file": (names or {}).get("readme", "README.md"),
        "own_files": [],
    }


# -- files and zips -------------------------------------------------------------------------------


def render(template_name: str, **context) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=jinja2.select_autoescape(["html.j2"]),
    )
    return env.get_template(template_name).render(**context)


def write_script(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")
    path.chmod(0o755)


def copy_tree(source: Path, dest: Path, *, skip_top: tuple[str, ...] = ()) -> None:
    """Copy regular files only (no symlinks, caches or bytecode)."""
    if not source.is_dir():
        raise BuildError(f"{source} does not exist")
    for path in _files(source):
        rel = path.relative_to(source)
        if rel.parts[0] in skip_top:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        if path.stat().st_mode & 0o111:
            target.chmod(0o755)


def write_zip(root: Path, out: Path) -> Path:
    """Zip the files under ``root`` (not ``root`` itself: Gradescope wants them at the zip's root)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in _files(root):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100755 if path.stat().st_mode & 0o111 else 0o100644) << 16
            zf.writestr(info, path.read_bytes())
    tmp.replace(out)
    return out


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and p.suffix != ".pyc"
        and not SKIPPED_NAMES.intersection(p.relative_to(folder).parts)
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _req_name(requirement: str) -> str:
    return _canonical(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# -- command line ---------------------------------------------------------------------------------

STALE_HELP = "build with the checked-in student template even if the reference has changed since"


def add_parsers(subparsers) -> None:
    import argparse

    p = subparsers.add_parser(
        "build-autograder",
        help="build the zip to upload to Gradescope as the autograder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build the zip to upload as a Gradescope autograder: setup.sh and run_autograder at\n"
        "its root, the engine, the suite with its hidden tests and snapshots, the template\n"
        "(for provided files) and pinned requirements. Never the reference solution, the\n"
        "mutants or another assignment.",
        epilog="example:\n  lmgrade build-autograder cmu_11667_a2 -o autograder.zip\n\n"
        "setup.sh installs Python, the CPU build of torch and lmgrade's pinned dependencies\n"
        "into /opt/lmgrade/venv on Gradescope's Ubuntu image; run_autograder grades\n"
        "/autograder/submission and always leaves a valid results/results.json.",
    )
    p.add_argument("assignment", metavar="ID", help="assignment id (see `lmgrade list`)")
    p.add_argument("-o", "--out", type=Path, metavar="ZIP", help="zip to write (default: <ID>-autograder.zip)")
    p.add_argument(
        "--time-limit",
        type=int,
        default=GRADESCOPE_TIME_LIMIT,
        metavar="SECONDS",
        help=f"the assignment's time limit on Gradescope (default {GRADESCOPE_TIME_LIMIT}); "
        f"grading stops {TIME_MARGIN} s before it so that results.json is always written",
    )
    p.add_argument("--stale-template-ok", action="store_true", help=STALE_HELP)
    p.set_defaults(func=cmd_build_autograder)

    p = subparsers.add_parser(
        "build-handout",
        help="build the students' zip: template, public tests, a `pytest` that works",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build the zip students download: the template's files at its root, the public tests\n"
        "and their snapshots, the engine vendored in grader/, a conftest.py and pytest.ini so\n"
        "that a bare `pytest` in the unpacked folder tests the files there, pinned\n"
        "requirements and a README. No hidden test, hidden snapshot or reference file.",
        epilog="example:\n  lmgrade build-handout cmu_11667_a2 -o handout.zip\n"
        "  unzip handout.zip -d hw && cd hw && pytest",
    )
    p.add_argument("assignment", metavar="ID", help="assignment id (see `lmgrade list`)")
    p.add_argument("-o", "--out", type=Path, metavar="ZIP", help="zip to write (default: <ID>-handout.zip)")
    p.add_argument("--stale-template-ok", action="store_true", help=STALE_HELP)
    p.set_defaults(func=cmd_build_handout)


def cmd_build_autograder(args) -> int:
    assignment = load_assignment(args.assignment)
    if args.time_limit < 60:
        print(f"error: --time-limit must be at least 60 seconds (got {args.time_limit})", file=sys.stderr)  # noqa: T201
        return 2
    out = args.out or Path(f"{assignment.id}-autograder.zip")
    return _report(
        lambda: build_autograder(assignment, out, time_limit=args.time_limit, stale_template_ok=args.stale_template_ok),
        "autograder",
    )


def cmd_build_handout(args) -> int:
    assignment = load_assignment(args.assignment)
    out = args.out or Path(f"{assignment.id}-handout.zip")
    return _report(lambda: build_handout(assignment, out, stale_template_ok=args.stale_template_ok), "handout")


def _report(build, what: str) -> int:
    try:
        path = build()
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201
        return 1
    except OSError as err:  # an output path that cannot be written
        print(f"error: cannot write the {what} zip: {err}", file=sys.stderr)  # noqa: T201
        return 1
    with zipfile.ZipFile(path) as zf:
        n, size = len(zf.infolist()), sum(i.compress_size for i in zf.infolist())
    print(f"{what} zip written to {path} ({n} files, {size / 1e6:.1f} MB)")  # noqa: T201
    return 0
