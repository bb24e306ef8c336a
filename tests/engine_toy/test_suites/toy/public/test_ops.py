import torch


def test_scaled_shape(sub, snapshot):
    x = torch.randn(2, 3)
    snapshot.check("y", sub.ops.scaled(x, 2.0))


def test_scaled_is_finite(sub):
    # 0 points: a plain assert, whose failure must read as the test says, without pytest's
    # introspection of the expression
    assert torch.isfinite(sub.ops.scaled(torch.randn(2, 3), 2.0)).all()
