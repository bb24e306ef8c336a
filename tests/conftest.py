"""Shared fixtures for the project's own tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from grader import project_root

TOY = Path(__file__).parent / "engine_toy"

# The course environment installs wandb; the project's tests never log in or log anywhere.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Gradings fork their test processes from a warm server (grader.warm) unless a test says otherwise:
# the same path `lmgrade batch`, `mutants` and `demo` take.
os.environ.setdefault("LMGRADE_WARM", "1")


@pytest.hookimpl(optionalhook=True)  # `-p no:xdist` (make test-fast) does not know the hook
def pytest_xdist_make_scheduler(config, log):
    """Under xdist: every test is its own unit of work, except that an assignment's tests in
    tests/assignments/test_assignments.py go to one worker together. Their fixture grades some 40
    submissions; a second worker running one of those tests would grade them all again.
    (``xdist_group`` marks would say the same, but pytest-xdist 3.8 cannot rename the node ids of
    pytest 9, so ``--dist loadgroup`` ignores them.)"""
    from xdist.scheduler import LoadScopeScheduling

    from grader.assignment import list_assignments

    ids = sorted(list_assignments(), key=len, reverse=True)

    class PerAssignment(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path, _, rest = nodeid.partition("::")
            if path.endswith("test_assignments.py") and "[" in rest:
                params = rest.split("[", 1)[1]
                found = next((a for a in ids if a in params), None)
                if found:
                    return f"{path}[{found}]"
            return nodeid

    return PerAssignment(config, log)


@pytest.fixture(scope="session")
def shared_tmp() -> Path:
    """A temporary folder other users can enter. Under root, the grader runs student code as an
    unprivileged uid, which must be able to read the suite and fixtures; pytest's own tmp_path
    lives under a 0700 folder."""
    from grader.sandbox import run_folder

    path = Path(tempfile.mkdtemp(prefix="lmgrade-tests-", dir=run_folder()))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def toy_root(shared_tmp) -> Path:
    """A copy of the toy project with its template generated and snapshots recorded."""
    from grader.assignment import load_assignment
    from grader.record import record
    from grader.template import write_template

    root = shared_tmp / "toyproj"
    shutil.copytree(TOY, root)
    assignment = load_assignment("toy", root=root)
    write_template(assignment)
    record(assignment)
    return root


@pytest.fixture(scope="session")
def toy(toy_root):
    from grader.assignment import load_assignment

    return load_assignment("toy", root=toy_root)


@pytest.fixture(scope="session")
def repo() -> Path:
    return project_root()
