"""lmgrade for students: check your work from a notebook or a terminal, and export it.

In a notebook cell::

    import lmgrade
    lmgrade.check("1.3")   # the public tests of question 1.3 on your current code, with points
    lmgrade.check()        # every question
    lmgrade.export()       # checks the file names and writes submission.zip to upload

In a terminal: ``python -m lmgrade check 1.3`` and ``python -m lmgrade export``.
"""

from grader.check import check, export, main

__all__ = ["check", "export"]

if __name__ == "__main__":
    raise SystemExit(main())
