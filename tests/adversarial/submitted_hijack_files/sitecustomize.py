"""Submitted sitecustomize.py: patches numpy at interpreter start-up, if Python ever finds it."""
import os

try:
    open(os.path.join("@@SCRATCH@@", "ran-sitecustomize.py"), "w").close()  # tells the test this file ran
except OSError:
    pass

try:
    import numpy

    numpy.allclose = lambda *a, **k: True
    numpy.abs = numpy.absolute = lambda x, *a, **k: numpy.zeros(numpy.shape(x))
except Exception:
    pass
