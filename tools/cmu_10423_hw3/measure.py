"""Score and evidence score of every kind of submission of cmu_10423_hw3.

    python -m tools.cmu_10423_hw3.measure [--only reference,template,starter,mutants,alternatives]

For the reference, the template, the template in starter style (each `raise NotImplementedError`
replaced by `return ...`, then by `pass`, as the courses' real starters write their
placeholders), every mutant and every correct alternative, it prints the score and the evidence
score: what the run would score had the test process reported "passed" for every test (the most
a submission that rewrites its own process could claim).
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

from grader.assignment import load_assignment
from grader.mutants import list_mutants
from grader.runner import grade

ASSIGNMENT = "cmu_10423_hw3"
ROOT = Path(__file__).resolve().parents[2]
ALTERNATIVES = ROOT / "tests" / "alternatives" / ASSIGNMENT
_RAISE = re.compile(r"^(?P<indent>[ \t]*)raise NotImplementedError\b.*$", re.MULTILINE)


def starter_style(template: Path, out: Path, placeholder: str) -> Path:
    """A copy of the template with every `raise NotImplementedError` line replaced by
    `placeholder` (`return ...` or `pass`)."""
    shutil.copytree(template, out)
    for path in out.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        new = _RAISE.sub(lambda m: m.group("indent") + placeholder, text)
        if new != text:
            path.write_text(new, encoding="utf-8")
    return out


def list_alternatives() -> list[Path]:
    if not ALTERNATIVES.is_dir():
        return []
    return sorted(p for p in ALTERNATIVES.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def subjects(a, only: set[str], tmp: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if "reference" in only:
        out["reference"] = {"submission": a.reference_dir}
    if "template" in only:
        out["template"] = {"submission": a.template_dir}
    if "starter" in only:
        for name, placeholder in (("return-ellipsis", "return ..."), ("pass", "pass")):
            folder = starter_style(a.template_dir, tmp / name, placeholder)
            out[f"starter-style ({placeholder})"] = {"submission": folder}
    if "perfile" in only:  # one file in starter style, the others the reference's
        for path in sorted(a.template_dir.glob("*.py")):
            if not _RAISE.search(path.read_text(encoding="utf-8")):
                continue
            for name, placeholder in (("return-ellipsis", "return ..."), ("pass", "pass")):
                folder = tmp / f"{path.stem}-{name}"
                folder.mkdir()
                shutil.copyfile(path, folder / path.name)
                starter_style(folder, tmp / f"{path.stem}-{name}-out", placeholder)
                out[f"{path.name} starter-style ({placeholder})"] = {
                    "submission": None, "base": a.reference_dir, "overlays": (tmp / f"{path.stem}-{name}-out",),
                    "question": path.name}
    if "mutants" in only:
        for m in list_mutants(a):
            out[f"mutant {m.name}"] = {"submission": None, "base": a.reference_dir, "overlays": (m,)}
    if "alternatives" in only:
        for alt in list_alternatives():
            out[f"alternative {alt.name}"] = {"submission": None, "base": a.reference_dir, "overlays": (alt,)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="reference,template,starter,mutants,alternatives")
    args = parser.parse_args(argv)
    a = load_assignment(ASSIGNMENT)
    with tempfile.TemporaryDirectory(prefix="hw3-measure-") as tmp:
        Path(tmp).chmod(0o755)
        for label, kwargs in subjects(a, set(args.only.split(",")), Path(tmp)).items():
            submission = kwargs.pop("submission")
            question = kwargs.pop("question", None)
            report = grade(a, submission, label=label, **kwargs)
            if question is not None:  # the file's own question must score 0
                got = sum(t.score for t in report.tests if t.question == question)
                evidence = sum(t.evidence_score for t in report.tests if t.question == question)
                label = f"{label} [{question}: {got:g}, evidence {evidence:g}]"
            lost = [t.test_id.split("::")[-1] for t in report.tests if t.max_score > 0 and t.score < t.max_score]
            print(f"{label:45s} score {report.score:5g}/{report.max_score:g}  evidence {report.evidence_score:5g}"
                  f"  lost: {', '.join(lost[:4])}{' ...' if len(lost) > 4 else ''}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
