"""Submitted conftest.py: turns every test report into a pass, if pytest ever loads it."""
import os

import pytest

try:
    open(os.path.join("@@SCRATCH@@", "ran-conftest.py"), "w").close()  # tells the test this file ran
except OSError:
    pass


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    rep.outcome = "passed"
    rep.longrepr = None
    return rep
