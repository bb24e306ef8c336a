import torch
from helper import OFFSET
def scaled(x, s): return x * s + OFFSET
def norm(x, eps=1e-5): return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)
def rowsum(x): return x.sum(-1)
def layout(x): return {"kind": "a", "y": x}
def stats(x): return [x.shape[0], float(x.sum()), "ok"]
