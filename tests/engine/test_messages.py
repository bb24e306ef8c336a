"""Messages a student reads (issue #14), each rule on a small failing submission of the toy
assignment: the student's file, line and Class.method, also for errors raised inside torch; no
pytest introspection; no progress bars; placeholders read as "not implemented yet"; an exception
whose message starts with a blank line still shows its text."""

from __future__ import annotations

import shutil

import pytest

from grader.runner import grade

SUBMISSION = '''
import math

import torch
from tqdm import tqdm

from helper import OFFSET


class _Shapes:
    def add(self, x):
        return torch.zeros(2) + torch.zeros(3)  # torch raises: sizes do not match


def scaled(x, s):
    """Return x * s + OFFSET."""
    if x.numel() == 6:
        return x * math.inf  # the plain-assert test sees inf
    return _Shapes().add(x)


def norm(x, eps=1e-5):
    pass


def rowsum(x):
    for _ in tqdm(range(50)):  # a progress bar, which must not reach the output
        pass
    return x.sum(-1)


def layout(x):
    return ...


def stats(x):
    raise LookupError("\\n**********\\n  Resource stopwords not found.\\n  Please use the NLTK Downloader\\n**********\\n")
'''  # noqa: E501


def _line(text: str) -> int:
    return next(i for i, line in enumerate(SUBMISSION.splitlines(), start=1) if text in line)


@pytest.fixture(scope="module")
def report(toy, tmp_path_factory):
    folder = tmp_path_factory.mktemp("messages") / "sub"
    shutil.copytree(toy.reference_dir, folder, ignore=shutil.ignore_patterns("variants*"))
    (folder / "ops.py").write_text(SUBMISSION)
    folder.parent.chmod(0o755)
    return {t.test_id: t for t in grade(toy, folder).tests}


def test_errors_inside_torch_name_the_students_file_line_and_method(report):
    message = report["hidden/test_ops.py::test_scaled[0.5]"].message
    assert message.startswith("RuntimeError: The size of tensor a (2) must match"), message
    assert f"(raised in ops.py, line {_line('torch.zeros(2) + torch.zeros(3)')}, in _Shapes.add)" in message


def test_a_plain_assert_reads_as_written_without_introspection(report):
    message = report["public/test_ops.py::test_scaled_is_finite"].message
    assert message == "assertion failed", message
    assert "where" not in message and "+" not in message


def test_placeholders_read_as_not_implemented_yet(report):
    for test_id in ("hidden/test_ops.py::test_norm", "hidden/test_ops.py::test_layout"):
        assert "not implemented yet" in report[test_id].message, report[test_id].message


def test_no_progress_bar_reaches_the_output(report):
    t = report["hidden/test_ops.py::test_rowsum_vectorised"]
    assert t.passed, t.message
    assert "it/s" not in t.stdout and "%|" not in t.stdout and "%|" not in t.message


def test_a_message_starting_with_a_blank_line_keeps_its_text(report):
    message = report["hidden/test_ops.py::test_stats"].message
    assert "LookupError" in message and "Resource stopwords not found" in message, message
    assert f"(raised in ops.py, line {_line('raise LookupError')}, in stats)" in message
