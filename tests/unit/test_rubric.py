"""The rubric parser (grader.assignment): a mistake in assignment.yaml is refused with a message
naming the file and the field."""

from __future__ import annotations

import pytest
import yaml

from grader.assignment import RubricError, load_assignment

BASE = {
    "id": "toy",
    "modules": {"ops": ["ops.py"]},
    "questions": [
        {
            "number": "1",
            "points": 3,
            "tests": {
                "hidden/test_ops.py::test_a": 1,
                "hidden/test_ops.py::test_b": {"points": 2, "requires": ["hidden/test_ops.py::test_a"]},
            },
        }
    ],
}


def _load(tmp_path, **changes):
    data = {**BASE, **changes}
    folder = tmp_path / "test_suites" / "toy"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "assignment.yaml").write_text(yaml.safe_dump(data))
    return load_assignment("toy", root=tmp_path)


def test_a_valid_rubric_loads(tmp_path):
    a = _load(tmp_path)
    assert a.total_points == 3 and a.spec_for("hidden/test_ops.py::test_b").requires == ("hidden/test_ops.py::test_a",)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"questions": [{"number": "1", "points": 5, "tests": {"hidden/t.py::a": 1}}]}, "worth 5"),
        (
            {
                "questions": [
                    {"number": "1", "tests": {"hidden/t.py::a": 1}},
                    {"number": "2", "tests": {"hidden/t.py::a": 1}},
                ]
            },
            "listed in questions 1 and 2",
        ),
        (
            {
                "questions": [
                    {"number": "1", "tests": {"hidden/t.py::a": {"points": 1, "requires": ["hidden/t.py::zz"]}}}
                ]
            },
            "requires hidden/t.py::zz",
        ),
        ({"questions": [{"number": "1", "tests": {"hidden/t.py::a": "two"}}]}, "points must be a number"),
        ({"child_judged": ["hidden/t.py::nope"]}, "child_judged names"),
        ({"rules": [{"name": "r", "message": "m", "tests": ["*"]}]}, "needs 'forbid'"),
        (
            {"rules": [{"name": "r", "message": "m", "tests": ["*"], "no_loops_in": ["model.Class.f"]}]},
            "file.py:Class.method",
        ),
        ({"tools": {"commandz": []}}, "'tools' takes"),
        ({"data_env": {"NLTK_DATA": "../outside"}}, "must stay inside"),
        ({"requirements": ["torch"]}, "replaced by 'environment'"),
        ({"visibility": "sometimes"}, "visibility"),
        ({"id": "other"}, "differs from its folder"),
    ],
)
def test_mistakes_are_refused_naming_the_field(tmp_path, changes, words):
    with pytest.raises(RubricError, match=words):
        _load(tmp_path, **changes)
