"""Submitted torch.py: shadows torch, loads the real one, makes allclose/equal always true."""
import importlib
import os
import sys

try:
    open(os.path.join("@@SCRATCH@@", "ran-torch.py"), "w").close()  # tells the test this file ran
except OSError:
    pass

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
del sys.modules["torch"]
_real = importlib.import_module("torch")
_real.allclose = lambda *a, **k: True
_real.equal = lambda *a, **k: True
sys.modules["torch"] = _real
