"""The cmu_10423_hw3 suite grades what the handout and the course's real starter define.

- Every correct alternative in tests/alternatives/cmu_10423_hw3 (a form the handout or the
  course's F24/S25 starter allows: a Gaussian A, numeric labels, a 4-value get_accuracy, a
  dataset.map loader, train.py's inline main(), from_pretrained by model type) gets full marks,
  and the grading parent's evidence alone gives them (evidence score = score).
- Starter-style placeholders (each `raise NotImplementedError` of the template replaced by
  `return ...`, then by `pass`, as real starters write them) score 0, evidence included, in the
  whole template and file by file (that file's question scores 0).
- The rules of the suite's judges.py accept the reference's observations and reject degenerate
  ones (pure numpy, no grading run).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from grader.assignment import load_assignment
from grader.judges import Evidence, load_rulebook
from grader.runner import grade

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "cmu_10423_hw3"
ALTERNATIVES = sorted(p for p in (ROOT / "tests" / "alternatives" / ASSIGNMENT).iterdir() if p.is_dir())
_RAISE = re.compile(r"^(?P<indent>[ \t]*)raise NotImplementedError\b.*$", re.MULTILINE)


def starter_style(src: Path, dst: Path, placeholder: str, only: str | None = None) -> Path:
    """A copy of the template's files (or of one file) with every `raise NotImplementedError`
    line replaced by `placeholder`."""
    dst.mkdir(parents=True)
    for path in sorted(src.glob("*.py")):
        if only is not None and path.name != only:
            continue
        text = _RAISE.sub(lambda m: m.group("indent") + placeholder, path.read_text(encoding="utf-8"))
        (dst / path.name).write_text(text, encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def assignment():
    return load_assignment(ASSIGNMENT)


@pytest.fixture(scope="module")
def graded_alternatives(assignment):
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = pool.map(lambda alt: grade(assignment, None, base=assignment.reference_dir, overlays=(alt,),
                                             label=f"alternative {alt.name}"), ALTERNATIVES)
        return dict(zip((a.name for a in ALTERNATIVES), reports))


def test_there_are_alternatives_with_notes():
    assert len(ALTERNATIVES) >= 6
    for alt in ALTERNATIVES:
        note = alt / "ALTERNATIVE.md"
        assert note.is_file() and note.read_text(encoding="utf-8").strip(), f"{alt.name} needs an ALTERNATIVE.md"


@pytest.mark.parametrize("name", [a.name for a in ALTERNATIVES])
def test_each_alternative_gets_full_marks(graded_alternatives, assignment, name):
    report = graded_alternatives[name]
    lost = [(t.test_id, t.message[:200]) for t in report.tests if t.max_score > 0 and not t.passed]
    assert lost == []
    assert report.score == report.evidence_score == assignment.total_points


@pytest.fixture(scope="module")
def graded_starter_style(assignment, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("starter-style")
    tmp.chmod(0o755)
    jobs = {}
    for placeholder in ("return ...", "pass"):
        tag = "ellipsis" if placeholder != "pass" else "pass"
        jobs[("template", placeholder)] = {"submission": starter_style(assignment.template_dir, tmp / tag, placeholder)}
        for file in ("lora.py", "dataloader.py", "train.py", "generate.py"):
            overlay = starter_style(assignment.template_dir, tmp / f"{tag}-{file}", placeholder, only=file)
            jobs[(file, placeholder)] = {"submission": None, "base": assignment.reference_dir, "overlays": (overlay,)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = pool.map(lambda kw: grade(assignment, kw["submission"], **{k: v for k, v in kw.items()
                                                                              if k != "submission"}),
                           jobs.values())
        return dict(zip(jobs, reports))


@pytest.mark.parametrize("placeholder", ["return ...", "pass"])
def test_starter_style_template_scores_zero(graded_starter_style, placeholder):
    report = graded_starter_style[("template", placeholder)]
    assert (report.score, report.evidence_score) == (0, 0)
    assert all(t.message for t in report.tests if t.max_score > 0)


@pytest.mark.parametrize("placeholder", ["return ...", "pass"])
@pytest.mark.parametrize("file", ["lora.py", "dataloader.py", "train.py", "generate.py"])
def test_starter_style_file_earns_nothing_for_its_question(graded_starter_style, file, placeholder):
    report = graded_starter_style[(file, placeholder)]
    own = [t for t in report.tests if t.question == file]
    assert own and sum(t.score for t in own) == 0 and sum(t.evidence_score for t in own) == 0


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


@pytest.mark.parametrize("labels,ok", [(("positive", "negative"), True), (("1", "0"), True),
                                       (("Positive", "Negative."), True), (("negative", "positive"), False),
                                       (("0", "1"), False), (("positive", "positive"), False), (("", ""), False)])
def test_instruction_rule_accepts_words_and_numbers(rules, labels, ok):
    problems = judge(rules, "instruction_texts", _texts(labels), {"records": _records()}, records="records")
    assert (problems == []) == ok, problems


def test_instruction_rule_needs_the_prompt_first(rules):
    obs = _texts(("positive", "negative"))
    obs["texts"] = ["positive " + t for t in obs["prompts"]]
    assert judge(rules, "instruction_texts", obs, {"records": _records()}, records="records")
