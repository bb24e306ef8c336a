import torch
from helper import OFFSET
def scaled(x, s): return x * s + OFFSET
def norm(x, eps=1e-5): return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
def rowsum(x): return torch.stack([r.sum() for r in x])
def layout(x): return {"kind": "a", "y": x}
def stats(x): return [x.shape[0], float(x.sum()), "ok"]
