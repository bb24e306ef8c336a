# Inlined into run_autograder: check lmgrade's own results.json and publish it to results/.
import json
import sys
from pathlib import Path

from grader.results import validate, write_json_atomic

own, published, status, budget = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
TIMED_OUT = (124, 137)  # `timeout` exit codes: TERM sent, KILL sent


def load_valid(p):
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        validate(data)
        return data
    except Exception as err:
        print(f"lmgrade's results.json unusable: {type(err).__name__}: {err}")
        return None


results = load_valid(own) if own.is_file() else None
if results is None:
    why = (
        f"the autograder ran out of time ({budget} s) before any test finished"
        if status in TIMED_OUT
        else f"the autograder failed to run (exit status {status})"
    )
    results = {
        "score": 0.0,
        "output": f"Your submission could not be graded: {why}. This is not a verdict on your "
        "code; the course staff can see the log and will regrade it.",
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [],
        "extra_data": {"lmgrade_error": why, "exit_status": status},
    }
elif status != 0:
    note = (
        f"The autograder stopped at its time budget ({budget} s): tests that had not finished score 0."
        if status in TIMED_OUT
        else f"The autograder ended early (exit status {status}); tests that had not finished score 0."
    )
    results["output"] = (results.get("output", "") + "\n" + note).strip()
    results.setdefault("extra_data", {})["exit_status"] = status
validate(results)
write_json_atomic(results, published)
print(f"results.json: score {results.get('score')}")
