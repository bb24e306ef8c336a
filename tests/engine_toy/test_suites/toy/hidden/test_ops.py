import pytest
import torch

from grader import properties


@pytest.mark.parametrize("s", [0.5, 3.0])
def test_scaled(sub, snapshot, s):
    x = torch.randn(4, 5)
    snapshot.check("y", sub.ops.scaled(x, s))


def test_norm(sub, snapshot):
    x = torch.randn(4, 8) * 1e-3  # small variance: eps matters
    snapshot.check("y", sub.ops.norm(x), hint="did you use the biased variance?")


def test_rowsum_vectorised(sub, snapshot):
    snapshot.check("rowsum", sub.ops.rowsum(torch.arange(12.0).reshape(4, 3)))
    counts = properties.op_counts(lambda n: sub.ops.rowsum(torch.ones(n, 3)), sizes=(4, 9))
    snapshot.judge("op_counts", counts, "no_growth", sizes=[4, 9], over="the number of rows")


def test_layout(sub, snapshot):
    x = torch.randn(3)
    out = sub.ops.layout(x)
    snapshot.check("kind", out["kind"])
    snapshot.check("y", out["y"])


def test_stats(sub, snapshot):
    x = torch.arange(6.0).reshape(3, 2)
    snapshot.check("stats", sub.ops.stats(x))
