"""Gradescope ``results.json``: built from a GradeReport, validated, written atomically.

Every rubric test appears (a skipped, crashed or timed-out test is an explicit failed entry,
unlike gradescope-utils which drops skips), ``execution_time`` is a number, every ``output`` is
cut below Gradescope's 100,000-character limit, and the file is replaced in one ``os.replace``
so a kill at any moment leaves the previous valid file.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from grader.assignment import is_public
from grader.report import GradeReport, TestResult

MAX_TEST_OUTPUT = 20_000
MAX_OUTPUT = 90_000  # under Gradescope's 100,000 with room for its own truncation marker
STATUS_WORDS = {
    "passed": "passed",
    "failed": "failed",
    "error": "error",
    "skipped": "skipped",
    "timeout": "timed out",
    "crashed": "crashed",
    "not run": "not run",
}


def build_results(report: GradeReport) -> dict:
    tests = [_test_entry(t) for t in report.tests]
    leaderboard = [
        {
            "name": t.extra["leaderboard_column"],
            "value": t.extra.get("leaderboard_value"),
            "order": t.extra.get("leaderboard_order", "desc"),
        }
        for t in report.tests
        if "leaderboard_column" in t.extra
    ]
    lines = [f"{report.assignment.title}", f"Autograded score: {report.score:g} / {report.max_score:g}"]
    if report.interrupted:
        lines.append("INTERRUPTED: grading was stopped before it finished; tests that did not run score 0.")
    lines += [f"Note: {n}" for n in report.notes]
    results = {
        "score": report.score,
        "execution_time": round(report.execution_time, 3),
        "output": _cut("\n".join(lines), MAX_OUTPUT),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [t for t in tests if t is not None],
        "extra_data": {"assignment": report.assignment.id, "max_score": report.max_score},
    }
    if leaderboard:
        results["leaderboard"] = leaderboard
    return results


def _test_entry(t: TestResult) -> dict | None:
    if "leaderboard_column" in t.extra:
        return None  # gradescope-utils convention: leaderboard tests go to the leaderboard only
    status = "passed" if t.passed else "failed"
    output = f"{STATUS_WORDS.get(t.outcome, t.outcome)}" if t.outcome != "passed" or t.message else ""
    if t.message and t.outcome != "passed":
        hide = t.extra.get("hide_errors")
        output += ": " + (hide if isinstance(hide, str) and hide else t.message)
    elif t.message:
        output = t.message
    if t.stdout.strip():
        output += ("\n\n" if output else "") + "Your code printed:\n" + t.stdout
    entry = {
        "name": _name(t),
        "score": t.score,
        "max_score": t.max_score,
        "status": status,
        "output": _cut(output, MAX_TEST_OUTPUT),
        "visibility": t.visibility,
    }
    number = t.extra.get("number") or t.question
    if number:
        entry["number"] = str(number)
    tags = list(t.extra.get("tags") or [])
    if t.question_name:
        tags.append(t.question_name)
    if tags:
        entry["tags"] = tags
    entry["extra_data"] = {"test_id": t.test_id, "outcome": t.outcome, "duration": round(t.duration, 3)}
    return entry


def _name(t: TestResult) -> str:
    kind = "public" if is_public(t.test_id) else "hidden"
    func = t.test_id.split("::", 1)[-1]
    where = f"{t.question_name} " if t.question_name else ""
    return f"{where}{func} ({kind})"


def _cut(text: str, limit: int) -> str:
    text = text.replace("\x00", "")
    if len(text) <= limit:
        return text
    half = (limit - 40) // 2
    return text[:half] + "\n[... output truncated by lmgrade ...]\n" + text[-half:]


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files("grader").joinpath("schemas/results.schema.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    checked = schema()
    cls = jsonschema.validators.validator_for(checked)
    cls.check_schema(checked)  # once: jsonschema.validate() checks the schema itself on every call
    return cls(checked)


def validate(results: dict) -> None:
    """Raise jsonschema.ValidationError if ``results`` is not a valid Gradescope results.json."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(results))
    if error is not None:
        raise error


def write_results(report: GradeReport, path: Path) -> dict:
    results = build_results(report)
    validate(results)
    write_json_atomic(results, path)
    return results


def write_json_atomic(data: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
