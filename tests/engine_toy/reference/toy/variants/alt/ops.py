"""The accepted alternative design of layout()."""
import torch

from helper import OFFSET


def scaled(x, s):
    return x * s + OFFSET


def norm(x, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)


def rowsum(x):
    return x.sum(-1)


def layout(x):
    return {"kind": "b", "y": 2 * x}


def stats(x):
    return [x.shape[0], float(x.sum()), "ok"]
