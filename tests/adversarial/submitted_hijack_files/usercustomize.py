"""Submitted usercustomize.py: same as sitecustomize.py, through the user site."""
import os

try:
    open(os.path.join("@@SCRATCH@@", "ran-usercustomize.py"), "w").close()  # tells the test this file ran
except OSError:
    pass

try:
    import numpy

    numpy.allclose = lambda *a, **k: True
except Exception:
    pass
