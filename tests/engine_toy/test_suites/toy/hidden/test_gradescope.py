import pytest
import torch
from gradescope_utils.autograder_utils.decorators import hide_errors, partial_credit, tags


@partial_credit(2)
def test_partial(sub, set_score=None):
    y = sub.ops.scaled(torch.ones(1), 1.0)
    set_score(2.0 if float(y) == 2.0 else 0.5)


def test_skipped(sub):
    sub.ops.scaled(torch.ones(1), 1.0)
    pytest.skip("skipped on purpose")


@hide_errors("Something about stats is wrong.")
@tags("stats")
def test_hidden_errors(sub):
    assert sub.ops.stats(torch.ones(2, 2))[2] == "ok", "stats must end with 'ok'"
