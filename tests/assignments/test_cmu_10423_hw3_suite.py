"""The cmu_10423_hw3 suite's own rules (test_suites/cmu_10423_hw3/judges.py) accept the
reference's observations and reject degenerate ones (pure numpy, no grading run).

Its correct alternatives (tests/alternatives/cmu_10423_hw3.yaml: a Gaussian A, numeric labels, a
4-value get_accuracy, a dataset.map loader, train.py's inline main(), from_pretrained by model
type) and its starter-style templates are graded with every assignment's in test_assignments.py;
`python -m tools.measure_suite cmu_10423_hw3` measures them all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grader.judges import Evidence, load_rulebook

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENT = "cmu_10423_hw3"


# -- the suite's rules, on hand-made observations ----------------------------------------------


@pytest.fixture(scope="module")
def rules():
    return load_rulebook(ROOT / "test_suites" / ASSIGNMENT)


def judge(rules, name, value, seen=None, **params):
    return rules.evaluate(name, Evidence(key="v", value=value, params=params, seen=seen or {}))


def test_random_init_accepts_kaiming_and_gaussian_rejects_degenerate(rules):
    rng = np.random.default_rng(0)
    bound = 1 / 8
    assert judge(rules, "random_init", rng.uniform(-bound, bound, (8, 64))) == []
    assert judge(rules, "random_init", rng.normal(0, 1 / 8, (8, 64))) == []
    assert judge(rules, "random_init", np.zeros((8, 64)))
    assert judge(rules, "random_init", np.full((8, 64), 0.1))
    assert judge(rules, "random_init", rng.uniform(0, 1, (8, 64)))  # not centred


def test_linear_init(rules):
    rng = np.random.default_rng(1)
    assert judge(rules, "linear_init", rng.uniform(-0.125, 0.125, (48, 64)), bound=0.125) == []
    assert judge(rules, "linear_init", np.full((48, 64), 5.0), bound=0.125)
    assert judge(rules, "linear_init", np.zeros((48, 64)), bound=0.125)


def _dropout_case(where: str, p=0.5, n=8, rows=64):
    rng = np.random.default_rng(2)
    q = lambda: np.linalg.qr(rng.normal(size=(n, n)))[0]
    x, w, b, a, bm = rng.normal(size=(rows, n)) + 3, rng.normal(size=(n, n)), rng.normal(size=n), q(), q()
    mask = (rng.uniform(size=(rows, n)) > p) / (1 - p)
    base = x @ w.T + b
    if where == "input":
        out = base + (x * mask) @ a.T @ bm.T
    elif where == "output":
        out = base + (x @ a.T @ bm.T) * mask
    elif where == "frozen_too":
        out = (x * mask) @ w.T + b + (x * mask) @ a.T @ bm.T
    else:  # none
        out = base + x @ a.T @ bm.T
    return out, {"inputs": {"x": x, "W": w, "b": b, "A": a, "B": bm}}


@pytest.mark.parametrize("where,ok", [("input", True), ("output", False), ("frozen_too", False), ("none", False)])
def test_dropout_rule_tells_where_dropout_is(rules, where, ok):
    out, seen = _dropout_case(where)
    problems = judge(rules, "dropout_on_lora_input", out, seen, inputs="inputs", p=0.5, scaling=1.0)
    assert (problems == []) == ok, problems


def _records():
    return [{"text": "a fine film .", "label": 1}, {"text": "a dull film .", "label": 0}]


def _texts(labels, prompt="Classify the review as positive or negative.\nReview: {}\nSentiment:"):
    prompts = [prompt.format(r["text"]) for r in _records()]
    return {"prompts": prompts, "texts": [p + " " + lab for p, lab in zip(prompts, labels)], "kept": [True, True]}


@pytest.mark.parametrize(
    "labels,ok",
    [
        (("positive", "negative"), True),
        (("1", "0"), True),
        (("Positive", "Negative."), True),
        (("negative", "positive"), False),
        (("0", "1"), False),
        (("positive", "positive"), False),
        (("", ""), False),
    ],
)
def test_instruction_rule_accepts_words_and_numbers(rules, labels, ok):
    problems = judge(rules, "instruction_texts", _texts(labels), {"records": _records()}, records="records")
    assert (problems == []) == ok, problems


def test_instruction_rule_needs_the_prompt_first(rules):
    obs = _texts(("positive", "negative"))
    obs["texts"] = ["positive " + t for t in obs["prompts"]]
    assert judge(rules, "instruction_texts", obs, {"records": _records()}, records="records")
