import torch


def test_scaled_shape(sub, snapshot):
    x = torch.randn(2, 3)
    snapshot.check("y", sub.ops.scaled(x, 2.0))
