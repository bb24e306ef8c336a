"""The grading parent's static reading of a submission for the handout's rules (grader.rules):
forbidden names and aliases, dynamic lookups, and Python loops in the functions a rule names."""

from __future__ import annotations

from pathlib import Path

from grader.rules import forbidden_source_names, loops_in, scan

FORBIDDEN = """
import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.nn import LayerNorm as LN


class A(nn.Module):
    def __init__(self):
        self.ln, self.ln2 = nn.LayerNorm(3), LN(3)

    def f(self, x):
        return F.layer_norm(x, (3,)) + torch.ops.aten.native_layer_norm(x)

    def g(self, x):
        return getattr(F, "layer_" + "norm")(x) + vars(torch.nn.functional)["x"] + eval("1")

    def fine(self, x):
        return x.mean(-1) + self.eval() + getattr(self, "w")
"""

LOOPS = """
class Attention:
    def heads(self, x):
        return torch.stack([self.one(x, h) for h in range(self.n_head)])

    def fixed(self, q, k, v):
        q, k, v = [t.transpose(1, 2) for t in (q, k, v)]
        for i in range(3):
            pass
        return q

    def via_helper(self, x):
        return self.helper(x) + top(x)

    def helper(self, x):
        return x

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def top(x):
    while x:
        x = x - 1
    return x
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.py"
    path.write_text(text)
    return path


def test_forbidden_names_aliases_and_dynamic_lookups_are_found(tmp_path):
    found = [f.describe() for f in scan(_file(tmp_path, FORBIDDEN), "m.py", forbidden_source_names(["@layer_norm"]))]
    assert found == [
        "m.py, line 10: uses torch.nn.LayerNorm",
        "m.py, line 10: uses torch.nn.LayerNorm",
        "m.py, line 13: uses torch.nn.functional.layer_norm",
        "m.py, line 13: uses torch.ops.aten.native_layer_norm",
        "m.py, line 16: a dynamic lookup getattr(torch.nn.functional, ...) the grader cannot check",
        "m.py, line 16: a dynamic lookup vars(torch.nn.functional, ...) the grader cannot check",
        "m.py, line 16: dynamic code (eval(...)) the grader cannot check against the rule",
    ]


def test_loops_are_found_in_the_function_and_what_it_calls(tmp_path):
    path = _file(tmp_path, LOOPS)
    assert [f.what for f in loops_in(path, "m.py", "Attention.heads")] == [
        "a comprehension (a loop) in Attention.heads"
    ]
    assert loops_in(path, "m.py", "Attention.fixed") == []  # over (q, k, v) and range(3): fixed lengths
    assert [f.what for f in loops_in(path, "m.py", "Attention.via_helper")] == [
        "a while loop in Attention.via_helper (through top)"
    ]
    assert [f.what for f in loops_in(path, "m.py", "Attention.forward")] == ["a for loop in Attention.forward"]
    assert loops_in(path, "m.py", "Attention.forward", allowed=("self.blocks",)) == []
    assert loops_in(path, "m.py", "Attention.missing") == []
