"""``lmgrade build-autograder`` and ``lmgrade build-handout``: the two zips a course ships.

The **autograder zip** is what Gradescope unpacks into ``/autograder/source``: ``setup.sh`` and
``run_autograder`` at its root (rendered from ``grader/templates/``), the engine's source, the
suite with its rubric, the assignment's fixtures with the hidden snapshots, the student
template (for provided files), and the pinned requirements. The **handout zip** is what students
download: the template's files at the root, the public tests, the public snapshots, the engine
vendored in ``grader/`` and a ``conftest.py`` + ``pytest.ini`` that make a bare ``pytest`` test
the folder itself.

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
from importlib import metadata
from pathlib import Path

import yaml

from grader import __version__
from grader.assignment import Assignment, load_assignment

TORCH_VERSION = "2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
VENV = "/opt/lmgrade/venv"
GRADESCOPE_TIME_LIMIT = 600  # seconds, Gradescope's default per-submission limit
TIME_MARGIN = 45  # seconds kept for start-up, finalising results.json and upload
ENGINE_FILES = ("pyproject.toml", "README.md")  # README.md: pyproject names it as the readme
# What the public tests need from the engine when a student runs pytest (no TA tooling).
STUDENT_ENGINE_REQUIREMENTS = ("torch", "numpy", "pytest", "safetensors", "pyyaml")
SKIPPED_NAMES = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints", ".DS_Store", ".ruff_cache"}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip
PYTHON_MINORS = range(8, 20)


class BuildError(RuntimeError):
    """The zip cannot be built as asked; the message says what to run or fix."""


# -- entry points ---------------------------------------------------------------------------------

def build_autograder(assignment: Assignment, out: Path, *, time_limit: int = GRADESCOPE_TIME_LIMIT,
                     stale_template_ok: bool = False) -> Path:
    """Write Gradescope's autograder zip for ``assignment`` to ``out``."""
    check_sources(assignment, stale_template_ok=stale_template_ok)
    with tempfile.TemporaryDirectory(prefix="lmgrade-build-") as tmp:
        root = Path(tmp) / "autograder"
        stage_autograder(assignment, root, time_limit=time_limit)
        assert_no_reference(assignment, root)
        return write_zip(root, out)


def build_handout(assignment: Assignment, out: Path, *, stale_template_ok: bool = False) -> Path:
    """Write the students' handout zip for ``assignment`` to ``out``."""
    check_sources(assignment, stale_template_ok=stale_template_ok)
    with tempfile.TemporaryDirectory(prefix="lmgrade-handout-") as tmp:
        root = Path(tmp) / "handout"
        stage_handout(assignment, root)
        assert_no_reference(assignment, root)
        assert_no_hidden(assignment, root)
        return write_zip(root, out)


# -- checks before building -----------------------------------------------------------------------

def check_sources(assignment: Assignment, *, stale_template_ok: bool = False) -> None:
    """The template must be in sync with the reference and the snapshots must match their manifest."""
    from grader.template import check_template

    if not assignment.template_dir.is_dir():
        raise BuildError(f"{assignment.template_dir} does not exist: run `lmgrade template {assignment.id}`")
    problems = [] if stale_template_ok else check_template(assignment)
    if problems:
        raise BuildError(f"the student template of {assignment.id} is out of sync with the reference "
                         f"({'; '.join(problems[:3])}): run `lmgrade template {assignment.id}`")
    manifest_path = assignment.snapshots_dir / "manifest.json"
    if not manifest_path.is_file():
        raise BuildError(f"no snapshots for {assignment.id} ({manifest_path} missing): run `lmgrade record {assignment.id}`")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for rel, digest in manifest.get("files", {}).items():
        path = assignment.snapshots_dir / rel
        if not path.is_file() or _sha256(path.read_bytes()) != digest:
            raise BuildError(f"snapshot {rel} of {assignment.id} is missing or does not match the manifest: "
                             f"run `lmgrade record {assignment.id}`")


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
            raise BuildError(f"refusing to build: {path.relative_to(root)} has the content of the "
                             f"reference solution's {secret[digest]}")


def assert_no_hidden(assignment: Assignment, root: Path) -> None:
    """The handout holds no hidden test file, no hidden snapshot and no hidden test id."""
    for path in _files(root):
        rel = path.relative_to(root)
        if "hidden" in rel.parts and not rel.parts[0] == "grader":
            raise BuildError(f"refusing to build the handout: {rel} is part of the hidden suite")
    rubric = (root / handout_suite_path(assignment) / "assignment.yaml").read_text(encoding="utf-8")
    for spec in assignment.tests:
        if not spec.test_id.startswith("public/") and spec.test_id in rubric:
            raise BuildError(f"refusing to build the handout: its rubric names hidden test {spec.test_id}")


# -- the autograder -------------------------------------------------------------------------------

def stage_autograder(assignment: Assignment, root: Path, *, time_limit: int = GRADESCOPE_TIME_LIMIT) -> None:
    """Lay out what Gradescope will find in /autograder/source."""
    project = assignment.root
    engine = Path(__file__).resolve().parent
    copy_tree(engine, root / "grader")
    for name in ENGINE_FILES:
        source = project / name if (project / name).is_file() else engine.parent / name
        if source.is_file():
            shutil.copyfile(source, root / name)
    for rel in (f"test_suites/{assignment.id}", f"fixtures/{assignment.id}", f"student_template/{assignment.id}"):
        copy_tree(project / rel, root / rel)
    lock, unpinned = autograder_requirements(assignment)
    (root / "requirements.lock").write_text(lock, encoding="utf-8")
    (root / "requirements-course.txt").write_text(
        "# course requirements not installed where this zip was built (installed unpinned)\n"
        + "".join(f"{name}\n" for name in unpinned), encoding="utf-8")
    context = autograder_context(assignment, bool(unpinned), time_limit)
    write_script(root / "setup.sh", render("setup.sh.j2", **context))
    write_script(root / "run_autograder", render("run_autograder.j2", **context))


def autograder_context(assignment: Assignment, course_unpinned: bool, time_limit: int) -> dict:
    from grader.results import validate

    fallback = {
        "score": 0.0, "output_format": "text", "visibility": "visible", "stdout_visibility": "hidden", "tests": [],
        "output": "Your submission could not be graded: the autograder's Python environment is broken. "
                  "This is not a verdict on your code; the course staff can see the log and will regrade it.",
        "extra_data": {"lmgrade_error": "python could not run"},
    }
    validate(fallback)
    finalize = (Path(__file__).parent / "templates" / "finalize_results.py").read_text(encoding="utf-8")
    return {
        "assignment_id": assignment.id, "title": assignment.title, "venv": VENV,
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "torch_version": TORCH_VERSION, "torch_index": TORCH_CPU_INDEX, "course_unpinned": course_unpinned,
        **time_plan(time_limit),
        "static_fallback": json.dumps(fallback), "finalize_py": finalize.rstrip("\n"),
    }


def time_plan(time_limit: int) -> dict:
    """How run_autograder spends Gradescope's time limit: lmgrade's own budget (it stops and
    writes what it has), then ``timeout``'s TERM and KILL if it is still running, and what is
    left to publish results.json before Gradescope gives up on the run."""
    margin = min(TIME_MARGIN, time_limit // 2)
    return {"time_limit": time_limit, "time_budget": time_limit - margin, "term_grace": margin // 3,
            "kill_grace": margin // 3}


def autograder_requirements(assignment: Assignment) -> tuple[str, list[str]]:
    """(requirements.lock text, course requirements not installed here).

    The lock pins, at the versions installed in this environment, lmgrade's dependencies, the
    course requirements that are installed here, and everything those depend on (markers
    evaluated for this Python, which is why setup.sh installs this same Python version).
    """
    roots = engine_requirements() + list(assignment.requirements)
    installed = [r for r in roots if _installed_version(_req_name(r))]
    unpinned = sorted({_req_name(r) for r in roots if not _installed_version(_req_name(r))})
    # the build backend too: setup.sh installs lmgrade with --no-build-isolation from the lock
    build_backend = [r for r in build_requirements() if _installed_version(_req_name(r))]
    pins = pinned_closure(installed + build_backend)
    header = (f"# lmgrade {__version__} for {assignment.id}: generated by `lmgrade build-autograder` from the\n"
              f"# versions installed where it was built (Python {sys.version_info.major}.{sys.version_info.minor}, "
              f"{sys.platform}). torch comes from {TORCH_CPU_INDEX}.\n")
    return header + "".join(f"{name}=={version}\n" for name, version in pins.items()), unpinned


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


def pinned_closure(requirements: list[str]) -> dict[str, str]:
    """{distribution: installed version} for ``requirements`` and all they require, sorted by name."""
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    todo = [(r, "") for r in requirements]  # (requirement, the extra it was pulled in for)
    while todo:
        text, extra = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = _canonical(req.name)
        version = _installed_version(name)
        if version is None or name == "lmgrade":
            continue
        if name not in pins:
            pins[name] = version.split("+", 1)[0]  # 2.13.0+cpu -> 2.13.0 (the local label is the index's)
            todo += [(r, "") for r in metadata.requires(name) or []]
        todo += [(r, e) for e in req.extras for r in metadata.requires(name) or []]
    return dict(sorted(pins.items()))


# -- the handout ----------------------------------------------------------------------------------

def handout_suite_path(assignment: Assignment) -> str:
    """Where the public suite sits in the handout: the repository's own layout, so the plugin
    finds the rubric, fixtures and snapshots exactly as it does in a checkout."""
    return f"test_suites/{assignment.id}"


HANDOUT_OWN = ("conftest.py", "pytest.ini", "grader", "test_suites", "fixtures")  # never in a template


def handout_names(assignment: Assignment) -> dict[str, str]:
    """File names of the handout's README and requirements: the usual ones, unless the template
    already has a file of that name (a course's own requirements.txt is a provided file)."""
    taken = {p.name for p in assignment.template_dir.iterdir()} if assignment.template_dir.is_dir() else set()
    return {"readme": "README.md" if "README.md" not in taken else "README-tests.md",
            "requirements": "requirements.txt" if "requirements.txt" not in taken else "requirements-tests.txt"}


def stage_handout(assignment: Assignment, root: Path) -> None:
    clash = [name for name in HANDOUT_OWN if (assignment.template_dir / name).exists()]
    if clash:
        raise BuildError(f"the template of {assignment.id} has {', '.join(clash)}, which the handout needs for "
                         "its own test set-up: rename it in the reference")
    copy_tree(assignment.template_dir, root)
    copy_tree(Path(__file__).resolve().parent, root / "grader")
    suite = root / handout_suite_path(assignment)
    copy_tree(assignment.suite_dir / "public", suite / "public")
    for name in ("conftest.py", "__init__.py", "judges.py"):  # judges.py: the suite's own rules
        if (assignment.suite_dir / name).is_file():
            shutil.copyfile(assignment.suite_dir / name, suite / name)
    (suite / "assignment.yaml").write_text(public_rubric_text(assignment), encoding="utf-8")
    stage_public_fixtures(assignment, root / "fixtures" / assignment.id)
    names = handout_names(assignment)
    requirements = student_requirements(assignment, root, names["requirements"])
    (root / names["requirements"]).write_text(requirements, encoding="utf-8")
    context = handout_context(assignment, requirements, names)
    (root / "pytest.ini").write_text(render("handout_pytest.ini.j2", **context), encoding="utf-8")
    (root / names["readme"]).write_text(render("handout_README.md.j2", **context), encoding="utf-8")
    (root / "conftest.py").write_text("", encoding="utf-8")  # so that it is among the handout's own files below
    context["own_files"] = handout_hook_files(root)
    (root / "conftest.py").write_text(render("handout_conftest.py.j2", **context), encoding="utf-8")


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
        # a public test's points only: what it `requires` of hidden tests is graded on Gradescope
        tests = {tid: (pts["points"] if isinstance(pts, dict) else pts)
                 for tid, pts in (q.get("tests") or {}).items() if str(tid).startswith("public/")}
        if tests:
            questions.append({**q, "tests": tests, "points": sum(float(p) for p in tests.values())})
    rules = []
    for rule in data.get("rules") or []:
        patterns = [p for p in rule.get("tests", []) if not str(p).startswith("hidden/")]
        if patterns:
            rules.append({**rule, "tests": patterns})
    public = {k: v for k, v in data.items() if k not in ("questions", "rules", "variants")}
    return {**public, "questions": questions, **({"rules": rules} if rules else {})}


def public_rubric_text(assignment: Assignment) -> str:
    header = (f"# The public part of {assignment.id}'s rubric, generated by `lmgrade build-handout`.\n"
              "# The hidden tests and their points are graded on Gradescope only.\n")
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


def student_requirements(assignment: Assignment, root: Path, file_name: str = "requirements.txt") -> str:
    """Top-level pins only: students install on many platforms, so let pip pick the rest."""
    names = list(STUDENT_ENGINE_REQUIREMENTS)
    if any("gradescope_utils" in p.read_text(encoding="utf-8", errors="replace")
           for p in (root / handout_suite_path(assignment)).rglob("*.py")):
        names.append("gradescope-utils")
    if assignment.notebooks or any(n.endswith(".ipynb") for names_ in assignment.modules.values() for n in names_):
        names += ["nbformat", "jupytext"]
    names += [_req_name(r) for r in assignment.requirements]
    lines = [f"# {assignment.id}: what the public tests need (generated by `lmgrade build-handout`).",
             f"# Install torch first from {TORCH_CPU_INDEX} (see the README), then `pip install -r {file_name}`."]
    for name in dict.fromkeys(_canonical(n) for n in names):
        version = TORCH_VERSION if name == "torch" else _installed_version(name)
        lines.append(f"{name}=={version.split('+', 1)[0]}" if version else name)
    return "\n".join(lines) + "\n"


def handout_context(assignment: Assignment, requirements: str, names: dict[str, str] | None = None) -> dict:
    public = [t for t in assignment.tests if t.test_id.startswith("public/")]
    hidden = [t for t in assignment.tests if not t.test_id.startswith("public/")]
    module_files = [names[0] for names in assignment.modules.values()]
    pinned = dict(line.split("==", 1) for line in requirements.splitlines() if "==" in line and not line.startswith("#"))
    manifest = assignment.snapshots_dir / "manifest.json"
    public_values = "public/" in manifest.read_text(encoding="utf-8") if manifest.is_file() else False
    return {
        "assignment_id": assignment.id, "title": assignment.title, "suite_path": handout_suite_path(assignment),
        "module_names": [" or ".join(f"`{n}`" for n in names) for names in assignment.modules.values()],
        "several_names": any(len(names) > 1 for names in assignment.modules.values()),
        "provided": list(assignment.provided),
        "required": list(dict.fromkeys(module_files + list(assignment.files_required))),
        "n_public": len(public), "n_hidden": len(hidden), "public_values": public_values,
        "public_points": f"{sum(t.points for t in public):g}", "hidden_points": f"{sum(t.points for t in hidden):g}",
        "total_points": f"{assignment.total_points:g}", "torch_version": TORCH_VERSION,
        "torch_index": TORCH_CPU_INDEX, "python_version": minimum_python(pinned),
        "requirements_file": (names or {}).get("requirements", "requirements.txt"),
        "readme_file": (names or {}).get("readme", "README.md"), "own_files": [],
    }


def minimum_python(pins: dict[str, str]) -> str:
    """The oldest Python 3.x every pinned distribution (as installed here) declares support for."""
    from packaging.specifiers import SpecifierSet

    specs = []
    for name in pins:
        try:
            requires = metadata.metadata(name).get("Requires-Python")
        except metadata.PackageNotFoundError:
            continue
        if requires:
            specs.append(SpecifierSet(requires))
    for minor in PYTHON_MINORS:
        if all(spec.contains(f"3.{minor}.0") or spec.contains(f"3.{minor}.99") for spec in specs):
            return f"3.{minor}"
    return f"{sys.version_info.major}.{sys.version_info.minor}"


# -- files and zips -------------------------------------------------------------------------------

def render(template_name: str, **context) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
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
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not p.is_symlink() and p.suffix != ".pyc"
                  and not SKIPPED_NAMES.intersection(p.relative_to(folder).parts))


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
        "build-autograder", help="build the zip to upload to Gradescope as the autograder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build the zip to upload as a Gradescope autograder: setup.sh and run_autograder at\n"
                    "its root, the engine, the suite with its hidden tests and snapshots, the template\n"
                    "(for provided files) and pinned requirements. Never the reference solution, the\n"
                    "mutants or another assignment.",
        epilog="example:\n  lmgrade build-autograder cmu_11667_a2 -o autograder.zip\n\n"
               "setup.sh installs Python, the CPU build of torch and lmgrade's pinned dependencies\n"
               "into /opt/lmgrade/venv on Gradescope's Ubuntu image; run_autograder grades\n"
               "/autograder/submission and always leaves a valid results/results.json.")
    p.add_argument("assignment", metavar="ID", help="assignment id (see `lmgrade list`)")
    p.add_argument("-o", "--out", type=Path, metavar="ZIP", help="zip to write (default: <ID>-autograder.zip)")
    p.add_argument("--time-limit", type=int, default=GRADESCOPE_TIME_LIMIT, metavar="SECONDS",
                   help=f"the assignment's time limit on Gradescope (default {GRADESCOPE_TIME_LIMIT}); "
                        f"grading stops {TIME_MARGIN} s before it so that results.json is always written")
    p.add_argument("--stale-template-ok", action="store_true", help=STALE_HELP)
    p.set_defaults(func=cmd_build_autograder)

    p = subparsers.add_parser(
        "build-handout", help="build the students' zip: template, public tests, a `pytest` that works",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build the zip students download: the template's files at its root, the public tests\n"
                    "and their snapshots, the engine vendored in grader/, a conftest.py and pytest.ini so\n"
                    "that a bare `pytest` in the unpacked folder tests the files there, pinned\n"
                    "requirements and a README. No hidden test, hidden snapshot or reference file.",
        epilog="example:\n  lmgrade build-handout cmu_11667_a2 -o handout.zip\n"
               "  unzip handout.zip -d hw && cd hw && pytest")
    p.add_argument("assignment", metavar="ID", help="assignment id (see `lmgrade list`)")
    p.add_argument("-o", "--out", type=Path, metavar="ZIP", help="zip to write (default: <ID>-handout.zip)")
    p.add_argument("--stale-template-ok", action="store_true", help=STALE_HELP)
    p.set_defaults(func=cmd_build_handout)


def cmd_build_autograder(args) -> int:
    assignment = load_assignment(args.assignment)
    if args.time_limit < 60:
        print(f"error: --time-limit must be at least 60 seconds (got {args.time_limit})", file=sys.stderr)
        return 2
    out = args.out or Path(f"{assignment.id}-autograder.zip")
    return _report(lambda: build_autograder(assignment, out, time_limit=args.time_limit,
                                                 stale_template_ok=args.stale_template_ok), "autograder")


def cmd_build_handout(args) -> int:
    assignment = load_assignment(args.assignment)
    out = args.out or Path(f"{assignment.id}-handout.zip")
    return _report(lambda: build_handout(assignment, out, stale_template_ok=args.stale_template_ok), "handout")


def _report(build, what: str) -> int:
    try:
        path = build()
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # an output path that cannot be written
        print(f"error: cannot write the {what} zip: {err}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(path) as zf:
        n, size = len(zf.infolist()), sum(i.compress_size for i in zf.infolist())
    print(f"{what} zip written to {path} ({n} files, {size / 1e6:.1f} MB)")
    return 0
