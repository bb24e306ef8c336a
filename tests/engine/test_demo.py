"""``lmgrade demo``, the README's main command: one assignment end to end."""

from __future__ import annotations

import json

from grader.assignment import load_assignment
from grader.cli import main

AID = "mila_ift6135_a2"  # the quickest real assignment to grade


def test_demo_grades_reference_template_and_mutants(tmp_path, capsys):
    out = tmp_path / "demo-out"
    out.mkdir()
    out.chmod(0o755)
    tmp_path.chmod(0o755)
    assert main(["demo", AID, "--mutants", "2", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    total = load_assignment(AID).total_points
    rows = {line.split("│")[2].strip(): line for line in printed.splitlines() if line.startswith("│")}
    assert f"{total:g}/{total:g}" in rows["reference"] and f"0/{total:g}" in rows["template"], printed
    mutants = [label for label in rows if label.startswith("mutant ")]
    assert len(mutants) == 2, printed
    for label in mutants:
        score = rows[label].split("│")[3].strip()
        assert float(score.split("/")[0]) < total, rows[label]
    written = sorted(p.name for p in (out / AID).glob("*.results.json"))
    assert len(written) == 4 and "reference.results.json" in written, written
    assert json.loads((out / AID / "reference.results.json").read_text())["score"] == total
    assert (out / AID / "learning_curves.png").is_file()  # the assignment's own tool demo ran too
