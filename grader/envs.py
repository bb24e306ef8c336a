"""Course environments: student code runs on the library versions its semester had.

Each assignment declares in ``assignment.yaml`` the environment its students had::

    environment:
      python: "3.11"            # the Python the environment is built on
      course_python: "3.10"     # what the course itself used (informational)
      packages:                 # the semester's ranges for what the real starter imports
        - transformers>=4.46,<4.51
        - pandas>=2.2,<2.3

``lmgrade env lock <id>`` resolves those ranges with pip in a scratch virtual environment and
writes ``test_suites/<id>/environment.lock``: exact ``name==version`` pins of everything in the
environment (the declared packages, ``torch==2.13.0`` as the CPU build, the engine's child-side
needs in ``CHILD_REQUIREMENTS``, and all they depend on). The lock is committed; loading an
assignment checks that it satisfies every declared range.

``ensure_environment`` turns a lock into a virtual environment, once: it is cached under
``$LMGRADE_ENV_CACHE`` (default ``<project root>/.lmgrade/envs``) in a folder named by the
sha256 of the lock's pins and the Python version, so identical locks share one environment.
It is built in a temporary folder and renamed into place under an ``fcntl`` lock, so parallel
graders (threads, processes, pytest-xdist workers) never build the same one twice. The
environment never holds lmgrade: the test process gets the engine through ``engine_dir()``, a
folder holding only a ``grader`` link to this package (``child_python_prefix``).

Where the running interpreter already holds every pin of the lock (the Gradescope image, whose
``setup.sh`` installs the lock into lmgrade's own venv), that interpreter is the environment.
``LMGRADE_ENV=current`` forces the running interpreter whatever it holds (for developers; the
run then does not grade as the course ran).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grader import project_root

TORCH_REQUIREMENT = "torch==2.13.0"
# What the engine's test process (pytest + grader.plugin and what it imports) needs, in every
# course environment: the suite runs there, not in lmgrade's own venv.
CHILD_REQUIREMENTS = (
    "pytest>=8",
    "pytest-timeout>=2.3",
    "numpy",
    "safetensors>=0.4",
    "pyyaml>=6",
    "gradescope-utils>=0.5",
    "nbformat>=5.9",
)
LOCK_NAME = "environment.lock"
ENV_VAR = "LMGRADE_ENV"  # "current": the test process runs in this interpreter
CACHE_VAR = "LMGRADE_ENV_CACHE"  # where environments are built (default .lmgrade/envs)
# an index serving the CPU build of torch (default: pip's own configuration, as `make install`)
TORCH_INDEX_VAR = "LMGRADE_TORCH_INDEX"
MARKER = "lmgrade-environment.json"  # written last: an environment without it is unfinished
BOOTSTRAP = "import sys; sys.path.insert(0, sys.argv.pop(1)); import pytest; raise SystemExit(pytest.main())"
PIP_TIMEOUT = 1800  # seconds for one pip command (a fresh machine downloads ~1 GB)

Progress = Callable[[str], None]


class CourseEnvError(RuntimeError):
    """A course environment cannot be resolved, built or used; the message says what to run."""


@dataclass(frozen=True)
class Environment:
    """An assignment's declared environment and its lock (``pins`` is None without a lock)."""

    assignment_id: str
    python: str
    packages: tuple[str, ...]
    lock_path: Path
    pins: dict[str, str] | None
    course_python: str = ""

    @property
    def requirements(self) -> tuple[str, ...]:
        """Everything the lock must satisfy: the declared ranges, torch, the engine's needs."""
        return (TORCH_REQUIREMENT, *self.packages, *CHILD_REQUIREMENTS)

    @property
    def key(self) -> str:
        """Cache key: the lock's pins (not its comments) and the Python version."""
        if self.pins is None:
            raise CourseEnvError(
                f"{self.assignment_id} has no {self.lock_path}: run `lmgrade env lock {self.assignment_id}`"
            )
        return environment_key(self.pins, self.python)


# -- declaring and locking -------------------------------------------------------------------------


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_environment(
    data: object, assignment_id: str, suite_dir: Path, where: str, *, check_lock: bool = True
) -> Environment:
    """The ``environment:`` mapping of an assignment.yaml, with its lock read and (unless
    ``check_lock`` is false: re-locking) checked against the declared ranges.

    Raises ``ValueError`` (``TypeError``) with a message naming the field or the package; the
    caller turns it into a ``RubricError``."""
    from packaging.requirements import InvalidRequirement, Requirement

    if not isinstance(data, dict):
        raise TypeError(f"{where}: 'environment' must be a mapping with 'python' and 'packages'")
    unknown = set(data) - {"python", "course_python", "packages"}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) in 'environment': {', '.join(sorted(unknown))}")
    python = str(data.get("python", ""))
    if not re.fullmatch(r"3\.\d+", python):
        raise ValueError(f'{where}: environment.python must be a Python version such as "3.11" (got {python!r})')
    packages = data.get("packages") or []
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise ValueError(f"{where}: environment.packages must be a list of requirements (name and version range)")
    seen: set[str] = set()
    for text in packages:
        try:
            req = Requirement(text)
        except InvalidRequirement as err:
            raise ValueError(f"{where}: environment.packages: {text!r} is not a requirement: {err}") from None
        name = canonical(req.name)
        if name in seen:
            raise ValueError(f"{where}: environment.packages lists {req.name} twice")
        seen.add(name)
        if name == "torch" and not req.specifier.contains("2.13.0"):
            raise ValueError(
                f"{where}: environment.packages: torch is {TORCH_REQUIREMENT} (the CPU build) in "
                f"every environment; {text!r} excludes it"
            )
        if name == "lmgrade":
            raise ValueError(
                f"{where}: environment.packages must not name lmgrade: the test process gets the "
                "engine from the checkout"
            )
    lock_path = suite_dir / LOCK_NAME
    env = Environment(
        assignment_id=assignment_id,
        python=python,
        packages=tuple(packages),
        lock_path=lock_path,
        pins=read_lock(lock_path) if lock_path.is_file() else None,
        course_python=str(data.get("course_python", "")),
    )
    if env.pins is not None and check_lock:
        problems = lock_problems(env)
        if problems:
            raise ValueError(
                f"{lock_path}: {problems[0]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                + f": run `lmgrade env lock {assignment_id}`"
            )
    return env


def read_lock(path: Path) -> dict[str, str]:
    """{canonical name: version} from a lock of ``name==version`` lines (comments allowed)."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.!+_-]*)", line)
        if not match:
            raise ValueError(f"{path}, line {number}: {raw.strip()!r} is not an exact `name==version` pin")
        name = canonical(match.group(1))
        if name in pins:
            raise ValueError(f"{path}, line {number}: {match.group(1)} is pinned twice")
        pins[name] = match.group(2)
    return pins


def lock_problems(env: Environment) -> list[str]:
    """Each declared range (and torch, and the engine's needs) the lock does not satisfy."""
    from packaging.requirements import Requirement

    pins = env.pins or {}
    problems = []
    for text in env.requirements:
        req = Requirement(text)
        name = canonical(req.name)
        if name not in pins:
            problems.append(f"{req.name} ({text}) is not in the lock")
        elif not req.specifier.contains(pins[name].split("+", 1)[0], prereleases=True):
            source = "the engine" if text in CHILD_REQUIREMENTS else "assignment.yaml"
            problems.append(f"{req.name} {pins[name]} does not satisfy {text} ({source})")
    return problems


def environment_key(pins: dict[str, str], python: str) -> str:
    text = "".join(f"{name}=={version}\n" for name, version in sorted(pins.items())) + f"python=={python}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def lock_text(env: Environment, pins: dict[str, str]) -> str:
    header = (
        f"# The course environment of {env.assignment_id} (Python {env.python}): every\n"
        f"# distribution in it, pinned. Generated by `lmgrade env lock {env.assignment_id}`\n"
        "# from the `environment:` ranges in assignment.yaml; do not edit by hand.\n"
        "# torch is the CPU build.\n"
    )
    return header + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def lock_environment(env: Environment, progress: Progress | None = None) -> dict[str, str]:
    """Resolve the declared ranges with pip in a scratch environment and write the lock.

    The scratch environment is checked (every declared package imports) and, when no
    environment for the new lock is cached yet, kept as that environment."""
    say = progress or _stderr_progress
    cache = cache_dir()
    scratch = Path(tempfile.mkdtemp(prefix=".lock-", dir=cache))
    try:
        venv = scratch / "venv"
        say(f"{env.assignment_id}: resolving {len(env.packages)} declared packages with pip (Python {env.python})")
        _create_venv(env.python, venv)
        _install_torch(venv, say)
        _pip(
            venv,
            ["install", *env.requirements],
            say,
            "resolving and installing the declared ranges",
        )
        pins = _installed_closure(venv, env.requirements)
        checked = Environment(env.assignment_id, env.python, env.packages, env.lock_path, pins, env.course_python)
        problems = lock_problems(checked)
        if problems:
            raise CourseEnvError(
                f"{env.assignment_id}: pip's resolution does not satisfy the declaration: {problems[0]}"
            )
        say(f"{env.assignment_id}: importing every declared package")
        check_imports(venv / "bin" / "python", env)
        env.lock_path.write_text(lock_text(env, pins), encoding="utf-8")
        target = cache / checked.key
        if not (target / MARKER).is_file():
            with _build_lock(cache, checked.key):
                if not (target / MARKER).is_file():
                    _finish(checked, venv, target)
        return pins
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_CLOSURE_SCRIPT = r"""
import json, sys
from importlib import metadata
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pins, todo = {}, [(r, "") for r in json.loads(sys.argv[1])]
while todo:
    text, extra = todo.pop()
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": extra}):
        continue
    name = canonicalize_name(req.name)
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        raise SystemExit(f"{req.name} is required ({text}) but not installed")
    if name not in pins:
        pins[name] = dist.version.split("+", 1)[0]
        todo += [(r, "") for r in dist.requires or []]
    todo += [(r, e) for e in req.extras for r in dist.requires or []]
print(json.dumps(pins))
"""


def _installed_closure(venv: Path, roots: tuple[str, ...]) -> dict[str, str]:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", _CLOSURE_SCRIPT, json.dumps(list(roots))],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if out.returncode != 0:
        raise CourseEnvError(f"cannot list the resolved environment: {out.stderr.strip()[-500:]}")
    return dict(sorted(json.loads(out.stdout).items()))


_INSTALLED_SCRIPT = (
    "import json, re; from importlib import metadata; "
    "print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version "
    "for d in metadata.distributions() if d.metadata['Name']}))"
)


def installed_versions(python: Path) -> dict[str, str]:
    """{canonical name: version} of every distribution ``python`` sees."""
    out = subprocess.run(
        [str(python), "-I", "-c", _INSTALLED_SCRIPT],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if out.returncode != 0:
        raise CourseEnvError(f"cannot list what {python} holds: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


_IMPORT_SCRIPT = r"""
import importlib, json, sys
from importlib import metadata
failed = {}
for dist_name in json.loads(sys.argv[1]):
    dist = metadata.distribution(dist_name)
    names = (dist.read_text("top_level.txt") or "").split()
    if not names:
        names = sorted({f.parts[0].removesuffix(".py") for f in dist.files or []
                        if f.parts and (f.suffix == ".py" or len(f.parts) > 1)
                        and not f.parts[0].endswith((".dist-info", ".data")) and f.parts[0] != ".."
                        and f.parts[0].isidentifier()})
    for module in names:
        if module.startswith("_") or module in ("tests", "test"):
            continue
        try:
            importlib.import_module(module)
        except Exception as err:  # reported per package: any import error of any kind counts
            failed[dist_name] = f"import {module}: {type(err).__name__}: {err}"[:400]
            break
print(json.dumps(failed))
"""


def check_imports(python: Path, env: Environment) -> None:
    """Every declared package (and torch) imports in the environment, or a CourseEnvError
    names the first that does not (a range too wide for its own dependencies, usually)."""
    from packaging.requirements import Requirement

    names = ["torch", *(Requirement(p).name for p in env.packages)]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LMGRADE_"))}
    child_env.update(
        {
            "WANDB_MODE": "disabled",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "MPLBACKEND": "Agg",
        }
    )
    out = subprocess.run(
        [str(python), "-I", "-W", "ignore", "-c", _IMPORT_SCRIPT, json.dumps(names)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=child_env,
        cwd="/",
    )
    if out.returncode != 0:
        raise CourseEnvError(
            f"{env.assignment_id}: checking the environment's imports failed: {out.stderr.strip()[-800:]}"
        )
    failed = json.loads(out.stdout.strip().splitlines()[-1])
    if failed:
        name, why = next(iter(failed.items()))
        raise CourseEnvError(
            f"{env.assignment_id}: {name} does not import in its course environment ({why}); "
            f"narrow its range (or a dependency's) in assignment.yaml and run "
            f"`lmgrade env lock {env.assignment_id}`"
        )


# -- building and finding environments -----------------------------------------------------------

_memo: dict[str, Path] = {}
_memo_lock = threading.Lock()
_warned_current = False


def cache_dir() -> Path:
    """Where environments live: ``$LMGRADE_ENV_CACHE`` or ``<project root>/.lmgrade/envs``."""
    configured = os.environ.get(CACHE_VAR)
    path = Path(configured).expanduser().resolve() if configured else project_root() / ".lmgrade" / "envs"
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        _open_to_others(path, stop=path.parent.parent if not configured else path.parent)
    return path


def ensure_environment(assignment, progress: Progress | None = None) -> Path:
    """The Python of ``assignment``'s course environment, built (once) if it is not cached.

    An assignment without an ``environment:`` and ``LMGRADE_ENV=current`` use this interpreter."""
    env = getattr(assignment, "environment", None)
    mode = os.environ.get(ENV_VAR, "")
    if mode not in ("", "current"):
        raise CourseEnvError(f"{ENV_VAR}={mode!r} is not understood (unset it, or set it to 'current')")
    if env is None or mode == "current":
        if env is not None:
            _warn_current(env)
        return Path(sys.executable)
    key = env.key
    with _memo_lock:
        if key in _memo:
            return _memo[key]
    if current_interpreter_holds(env):
        python = Path(sys.executable)
    else:
        cache = cache_dir()
        target = cache / key
        if not (target / MARKER).is_file():
            with _build_lock(cache, key):
                if not (target / MARKER).is_file():
                    build_environment(env, target, progress)
        python = target / "bin" / "python"
    with _memo_lock:
        _memo[key] = python
    return python


def current_interpreter_holds(env: Environment) -> bool:
    """This interpreter is of the lock's Python version and has every pinned distribution at
    its pinned version (the Gradescope image: the lock installed into lmgrade's own venv)."""
    from importlib import metadata

    if f"{sys.version_info.major}.{sys.version_info.minor}" != env.python or not env.pins:
        return False
    installed = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            installed.setdefault(canonical(name), dist.version.split("+", 1)[0])
    return all(installed.get(name) == version.split("+", 1)[0] for name, version in env.pins.items())


def build_environment(env: Environment, target: Path, progress: Progress | None = None) -> None:
    """Install exactly the lock into a new environment at ``target`` (built beside it, renamed)."""
    say = progress or _stderr_progress
    started = time.time()
    for stale in target.parent.glob(f".build-{target.name[:16]}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a build that was killed: callers hold the lock
    tmp = target.with_name(f".build-{target.name[:16]}-{os.getpid()}-{threading.get_ident()}")
    try:
        say(
            f"{env.assignment_id}: building its course environment (once; Python {env.python}, "
            f"{len(env.pins or {})} pinned packages) in {target}"
        )
        _create_venv(env.python, tmp)
        _install_torch(tmp, say)
        _pip(
            tmp,
            ["install", "--no-deps", "-r", str(env.lock_path)],
            say,
            f"installing {env.lock_path.name}",
        )
        installed = installed_versions(tmp / "bin" / "python")
        wrong = {n: v for n, v in (env.pins or {}).items() if installed.get(n, "").split("+")[0] != v.split("+")[0]}
        if wrong:
            name = next(iter(wrong))
            raise CourseEnvError(
                f"{env.assignment_id}: after installing the lock, {name} is "
                f"{installed.get(name, 'missing')} instead of {wrong[name]}"
            )
        say(f"{env.assignment_id}: checking that every declared package imports")
        check_imports(tmp / "bin" / "python", env)
        _finish(env, tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"{env.assignment_id}: course environment ready in {time.time() - started:.0f} s")


_BASE_PATHS_SCRIPT = (
    "import json, os, sys, sysconfig; p = sysconfig.get_paths(); "
    "print(json.dumps({'stdlib': p['stdlib'], 'platstdlib': p['platstdlib'], "
    "'executable': os.path.realpath(sys.executable)}))"
)


def _finish(env: Environment, built: Path, target: Path) -> None:
    """Describe, open to the test uid, and move into place (the marker is what makes it ready)."""
    _chmod_readable(built)
    if target.exists():
        shutil.rmtree(target)
    built.rename(target)
    _retarget_scripts(target, str(built), str(target))
    info = subprocess.run(
        [str(target / "bin" / "python"), "-I", "-c", _BASE_PATHS_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    outside = {p for p in json.loads(info.stdout).values() if not Path(p).is_relative_to(target)}
    marker = {
        "assignment": env.assignment_id,
        "python": env.python,
        "key": env.key,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pins": env.pins,
        "base_paths": sorted(outside),
    }  # the interpreter it was made from: the test uid reads it too
    (target / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
    (target / MARKER).chmod(0o644)


def _retarget_scripts(venv: Path, old: str, new: str) -> None:
    """Console scripts and activate files name the folder they were installed in."""
    for path in (venv / "bin").iterdir():
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 1 << 20:
            continue
        data = path.read_bytes()
        if old.encode() in data:
            path.write_bytes(data.replace(old.encode(), new.encode()))
    cfg = venv / "pyvenv.cfg"
    if cfg.is_file():
        cfg.write_text(cfg.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


class _build_lock:
    """An exclusive ``flock`` on ``<cache>/<key>.lock`` (threads and processes alike)."""

    def __init__(self, cache: Path, key: str):
        self.path = cache / f".{key[:16]}.lock"

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def find_python(version: str) -> Path:
    """An interpreter of ``version`` that other users can run (the test uid runs it)."""
    from grader.sandbox import is_root, open_to_others

    candidates = [Path(f"/usr/bin/python{version}"), Path(f"/usr/local/bin/python{version}")]
    found = shutil.which(f"python{version}")
    if found:
        candidates.append(Path(found))
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        candidates.append(Path(getattr(sys, "_base_executable", sys.executable)))
    for path in candidates:
        if not path.is_file() or not os.access(path, os.X_OK):
            continue
        real = path.resolve()
        if is_root() and not (open_to_others(real.parent) and real.stat().st_mode & 0o005 == 0o005):
            continue  # e.g. a pyenv Python under /root: the test uid could not run it
        return path
    raise CourseEnvError(
        f"no Python {version} that every user can run was found (looked for python{version} in "
        f"/usr/bin, /usr/local/bin and on PATH); install it, e.g. "
        f"`apt-get install python{version} python{version}-venv`"
    )


def _create_venv(version: str, where: Path) -> None:
    python = find_python(version)
    with_pip = _parent_pip() is None
    cmd = [str(python), "-m", "venv", *([] if with_pip else ["--without-pip"]), str(where)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    if out.returncode != 0:
        raise CourseEnvError(
            f"cannot create a virtual environment with {python}: {out.stderr.strip()[-500:]} "
            f"(install python{version}-venv)"
        )


def _parent_pip() -> list[str] | None:
    """This interpreter's pip, which can install into another environment (``--python``)."""
    import importlib.util

    return [sys.executable, "-m", "pip"] if importlib.util.find_spec("pip") else None


def _pip(venv: Path, args: list[str], say: Progress, what: str) -> None:
    parent = _parent_pip()
    cmd = (
        parent + ["--python", str(venv / "bin" / "python")] if parent else [str(venv / "bin" / "python"), "-m", "pip"]
    ) + [*args, "--disable-pip-version-check", "-q"]
    say(f"  pip: {what}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=PIP_TIMEOUT, env=env)
    if out.returncode != 0:
        lines = [ln.strip() for ln in (out.stderr + out.stdout).splitlines() if ln.strip()]
        # pip's own verdicts, without the list of every version it knows
        errors = [ln.split(" (from versions:", 1)[0] for ln in lines if ln.startswith("ERROR:")]
        raise CourseEnvError(f"pip failed while {what}: " + " | ".join((errors or lines)[-3:])[-1500:])


def _install_torch(venv: Path, say: Progress) -> None:
    """The CPU build of torch, alone and first (as ``make install`` does): pip's own sources,
    or the index in ``$LMGRADE_TORCH_INDEX`` (e.g. PyTorch's CPU index)."""
    index = os.environ.get(TORCH_INDEX_VAR)
    args = ["install", "--no-deps", *(["--index-url", index] if index else []), TORCH_REQUIREMENT]
    _pip(venv, args, say, f"installing {TORCH_REQUIREMENT} (CPU)")


def _chmod_readable(root: Path) -> None:
    """``chmod -R a+rX``: the test process runs as another uid."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if os.path.islink(path):
                continue
            extra = 0o555 if (st.st_mode & 0o111 or os.path.isdir(path)) else 0o444
            if st.st_mode & extra != extra:
                os.chmod(path, st.st_mode | extra)
    os.chmod(root, os.stat(root).st_mode | 0o555)


def _open_to_others(path: Path, stop: Path) -> None:
    """o+x on ``path`` and its parents up to ``stop`` (the folders lmgrade itself created)."""
    for p in [path, *path.parents]:
        if p == stop or p == p.parent:
            break
        try:
            mode = p.stat().st_mode
            if mode & 0o005 != 0o005:
                p.chmod(mode | 0o005)
        except OSError:
            break


# -- the test process ------------------------------------------------------------------------------


def engine_dir() -> Path:
    """A folder holding only ``grader`` (a link to this package): on the test process's
    ``sys.path``, it exposes the engine and nothing else of the checkout."""
    package = Path(__file__).resolve().parent
    folder = cache_dir() / f"engine-{hashlib.sha256(str(package).encode()).hexdigest()[:16]}"
    link = folder / "grader"
    if link.is_symlink() and os.readlink(link) == str(package):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    _open_to_others(folder, stop=folder.parent.parent)
    if link.exists() and not link.is_symlink():
        # A copy of the project made without keeping links (shutil.copytree's default) turns the
        # link into a stale copy of some checkout's engine: replace it with the link to this one.
        shutil.rmtree(link, ignore_errors=True)
    tmp = folder / f".grader-{os.getpid()}-{threading.get_ident()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(package, target_is_directory=True)
    os.replace(tmp, link)
    return folder


def child_python_prefix(assignment, progress: Progress | None = None) -> list[str]:
    """The argv prefix that runs pytest in ``assignment``'s course environment with the engine
    importable (``-p grader.plugin`` and pytest's arguments follow)."""
    python = ensure_environment(assignment, progress)
    return [str(python), "-I", "-c", BOOTSTRAP, str(engine_dir())]


def child_readable_paths(assignment) -> list[Path]:
    """What the test process must be able to read to start: its environment (and the Python
    it was made from), the engine folder and the engine itself."""
    python = ensure_environment(assignment)
    package = Path(__file__).resolve().parent
    paths = [engine_dir(), package]
    env = getattr(assignment, "environment", None)
    marker = python.parent.parent / MARKER
    if env is not None and marker.is_file():
        paths.append(python.parent.parent)
        paths += [Path(p) for p in json.loads(marker.read_text(encoding="utf-8")).get("base_paths", [])]
    else:  # this interpreter: its environment and the installation it comes from
        import sysconfig

        dirs = sysconfig.get_paths()
        paths += [
            Path(sys.prefix),
            Path(dirs["stdlib"]),
            Path(dirs["platstdlib"]),
            Path(sys.executable).resolve(),
        ]
    return list(dict.fromkeys(paths))


def _warn_current(env: Environment) -> None:
    global _warned_current
    if not _warned_current:
        _warned_current = True
        print(  # noqa: T201
            f"lmgrade: {ENV_VAR}=current: tests run in {sys.executable}, not in the course "
            "environment of "
            f"{env.assignment_id} (its lock: {env.lock_path})",
            file=sys.stderr,
        )


def _stderr_progress(message: str) -> None:
    print(f"lmgrade: {message}", file=sys.stderr, flush=True)  # noqa: T201


# -- reporting -------------------------------------------------------------------------------------


def describe_environment(assignment) -> dict:
    """Where the environment is and the versions of what the assignment declares."""
    from packaging.requirements import Requirement

    env = assignment.environment
    python = ensure_environment(assignment)
    declared = [canonical(Requirement(p).name) for p in env.packages] if env else []
    pins = (env.pins or {}) if env else {}
    kind = "current interpreter" if python == Path(sys.executable) else "cached course environment"
    return {
        "assignment": assignment.id,
        "python": str(python),
        "kind": kind,
        "python_version": env.python if env else f"{sys.version_info.major}.{sys.version_info.minor}",
        "course_python": env.course_python if env else "",
        "versions": {name: pins.get(name, "?") for name in ["torch", *declared]},
        "pins": len(pins),
    }
