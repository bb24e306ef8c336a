"""lmgrade: grade language-model course assignments against a reference solution.

The engine is assignment-agnostic. An assignment is a folder of reference files with solution
markers, a pytest suite under ``test_suites/<id>/`` with its rubric ``assignment.yaml``, and
fixtures; see ``docs/engine.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"


def project_root() -> Path:
    """Folder holding ``reference/``, ``test_suites/`` and ``fixtures/``.

    ``LMGRADE_HOME`` overrides it (the Gradescope autograder unpacks there); otherwise it is
    the checkout this package was installed from (``pip install -e .``).
    """
    env = os.environ.get("LMGRADE_HOME")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent
