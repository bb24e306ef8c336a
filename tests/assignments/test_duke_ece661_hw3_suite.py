"""duke_ece661_hw3: the rules of test_suites/duke_ece661_hw3/judges.py, on plain values (fast).

Its correct alternatives (tests/alternatives/duke_ece661_hw3.yaml) and its starter-style templates
are graded with every assignment's in test_assignments.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grader.judges import Evidence, load_rulebook

ASSIGNMENT = "duke_ece661_hw3"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rules():
    return load_rulebook(ROOT / "test_suites" / ASSIGNMENT)


def judge(rules, name, value, seen=None, **params):
    return rules.evaluate(name, Evidence(key="k", value=value, params=params, seen=seen or {}))


# -- rules --------------------------------------------------------------------------------------


def test_one_of_accepts_any_recorded_form_only(rules):
    seen = {"a": np.zeros(3), "b": np.ones(3)}
    assert judge(rules, "one_of", np.ones(3), seen, keys=["a", "b"], what="x", forms="f") == []
    assert (
        "none of the accepted" in judge(rules, "one_of", np.full(3, 2.0), seen, keys=["a", "b"], what="x", forms="f")[0]
    )
    assert "shape" in judge(rules, "one_of", np.ones(4), seen, keys=["a", "b"], what="x", forms="f")[0]
    assert "NaN" in judge(rules, "one_of", np.array([1.0, np.nan, 1.0]), seen, keys=["a", "b"], what="x", forms="f")[0]


def test_generated_text_accepts_returned_or_printed_text(rules):
    seen = {"full": "Hugo Marsh praised thecro line", "new": "cro line"}
    params = {"keys": ["full", "new"], "what": "the greedy text"}
    ok = [
        {"returned": "Hugo Marsh praised thecro  line", "printed": ""},
        {"returned": "cro line<|endoftext|>", "printed": ""},
        {"returned": None, "printed": "Generated Text:\n Hugo Marsh praised thecro line\n"},
    ]
    for value in ok:
        assert judge(rules, "generated_text", value, seen, **params) == [], value
    bad = [
        {"returned": "Hugo Marsh praised thecro line more", "printed": ""},
        {"returned": None, "printed": "Hugo Marsh praised thecro line more"},
        {"returned": None, "printed": "", "kind": "NoneType"},
    ]
    for value in bad:
        assert judge(rules, "generated_text", value, seen, **params), value


def _split(rows, labels):
    return {"parts": 6, "rows": [np.array(r) for r in rows], "labels": labels}


def test_imdb_split_rule():
    rules = load_rulebook(ROOT / "test_suites" / ASSIGNMENT)
    truth = ["positive", "negative"] * 5
    rows = [[0, 1, 2, 3, 4, 5, 6], [7], [8, 9]]
    labels = [[truth[i] for i in r] for r in rows]
    assert (
        judge(rules, "imdb_split", _split(rows, labels), n=10, truth=truth, aspects=["sizes", "partition", "labels"])
        == []
    )
    leaky = [[0, 1, 2, 3, 4, 5, 8], [7], [8, 9]]
    assert any(
        "leaks" in p
        for p in judge(
            rules,
            "imdb_split",
            _split(leaky, [[truth[i] for i in r] for r in leaky]),
            n=10,
            truth=truth,
            aspects=["partition"],
        )
    )
    flipped = [[("negative" if y == "positive" else "positive") for y in ys] for ys in labels]
    assert judge(rules, "imdb_split", _split(rows, flipped), n=10, truth=truth, aspects=["labels"])
    assert judge(
        rules, "imdb_split", _split([[0, 1], [2], [3]], [["positive"] * 2, ["x"], ["y"]]), n=10, truth=truth, aspects=[]
    )


def test_wikitext_fraction_forms(rules):
    raw = [" "] + [f" line {i} " if i % 3 else " " for i in range(1, 40)]
    text = [line.strip() for line in raw if line.strip()]
    files = {"train": ["wiki.train.raw", raw]}
    params = {"files": files, "fraction": 0.2}
    first_text = text[: round(0.2 * len(text))]
    assert judge(rules, "wikitext_fraction", {"train": first_text}, **params) == []
    assert judge(rules, "wikitext_fraction", {"train": raw[:8]}, **params) == []  # blank lines kept
    assert judge(rules, "wikitext_fraction", {"train": list(reversed(first_text))}, **params) == []
    too_many = text[: round(0.2 * len(raw))]
    assert judge(rules, "wikitext_fraction", {"train": too_many}, **params)
    assert judge(rules, "wikitext_fraction", {}, **params)


def test_lm_labels_rule(rules):
    ids = np.array([[5, 0, 7, 0, 0]])
    mask = np.array([[1, 1, 1, 0, 0]])
    seen = {"ids": ids, "mask": mask}
    params = {"ids": "ids", "mask": "mask", "pad_id": 0}
    assert judge(rules, "lm_labels", np.array([[5, 0, 7, -100, -100]]), seen, **params) == []
    assert judge(rules, "lm_labels", ids.copy(), seen, **params) == []  # collator masks
    eos_lost = judge(rules, "lm_labels", np.array([[5, -100, 7, -100, -100]]), seen, **params)
    assert "end-of-text" in eos_lost[0]
    assert judge(rules, "lm_labels", np.array([[5, 0, 7, 3, -100]]), seen, **params)


def test_per_epoch_losses_rule(rules):
    good = {
        "train": [[1.0, 3.0], [2.0, 2.0]],
        "eval": [[1.0, 2.5], [2.0, 2.1]],
        "history": [[1, 3.0, 2.5], [2, 2.0, 2.1]],
        "before": 6.0,
        "after": 2.0,
        "changed": 30,
        "tensors": 40,
    }
    assert judge(rules, "per_epoch_losses", good, epochs=2, min_changed=0.5) == []
    assert judge(rules, "per_epoch_losses", {**good, "eval": []}, epochs=2)
    assert judge(rules, "per_epoch_losses", {**good, "history": [[1, 3.0, 2.5], [2, 9.0, 2.1]]}, epochs=2)
    assert judge(rules, "per_epoch_losses", {**good, "after": 6.0}, epochs=2)
    assert judge(rules, "per_epoch_losses", {**good, "changed": 0}, epochs=2)


def test_same_and_differs_from_earlier(rules):
    seen = {"a": np.arange(3.0)}
    assert judge(rules, "same_as_earlier", np.arange(3.0), seen, other="a") == []
    assert judge(rules, "same_as_earlier", np.ones(3), seen, other="a")
    assert judge(rules, "differs_from_earlier", np.ones(3), seen, other="a", what="same") == []
    assert judge(rules, "differs_from_earlier", np.arange(3.0), seen, other="a", what="same")
