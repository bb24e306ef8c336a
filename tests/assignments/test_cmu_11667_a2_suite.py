"""The cmu_11667_a2 suite decides every point from evidence, as strictly as the handout.

* (its correct alternatives, tests/alternatives/cmu_11667_a2.yaml, and starter-style templates are
  graded with every assignment's in test_assignments.py);
* each newly enforced rule (no Python loop over heads, batch, positions; device placement;
  samplers' ``device``; a calibration that balances) has a mutant that the parent's evidence
  alone fails, in the check written for it;
* the FLOP budgets of questions 2.5 and 2.6 (``tools/cmu_11667_a2/flop_budgets.py``).

The mutant checks grade through the child process (2 at a time, only the check concerned).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from grader.assignment import load_assignment
from grader.mutants import grade_mutant, list_mutants
from tools.checkpoints.config_file import StudentConfig, read_config
from tools.cmu_11667_a2.flop_budgets import final_budget_problem, study_budget, train_flops

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENT = load_assignment("cmu_11667_a2")
MUTANTS = {m.name: m for m in list_mutants(ASSIGNMENT)}

TRAIN, CLASSIFY = "hidden/test_train.py::", "hidden/test_classify.py::"
# newly enforced rule -> the mutant breaking it and the hidden check that must fail on evidence
ENFORCED = {
    "q_kT_v_loop_over_heads": "hidden/test_model.py::test_q_kT_v_has_no_python_loop",
    "attention_loop_over_heads": "hidden/test_model.py::test_attention_has_no_python_loop",
    "attention_loop_over_batch": "hidden/test_model.py::test_attention_has_no_python_loop",
    "feedforward_loop_over_positions": "hidden/test_model.py::test_feedforward_has_no_python_loop",
    "embed_loop_over_batch": "hidden/test_model.py::test_embed_has_no_python_loop",
    "lm_forward_loop_over_batch": "hidden/test_model.py::test_lm_has_no_python_loop",
    "causal_mask_on_cpu": "hidden/test_model.py::test_lm_forward_on_meta_device",
    "default_mask_on_cpu": "hidden/test_model.py::test_lm_forward_on_meta_device",
    "random_sampler_ignores_device": TRAIN + "test_random_batch_sampler_properties",
    "sequential_sampler_ignores_device": TRAIN + "test_sequential_batch_sampler_properties",
    "calibration_fixed_threshold": CLASSIFY + "test_calibration_balances_a_biased_model",
}


@pytest.fixture(scope="module")
def graded_enforced():
    def run(item):
        name, test_id = item
        function = test_id.split("::")[-1]
        return grade_mutant(ASSIGNMENT, MUTANTS[name], pytest_args=("-k", function)).report

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(ENFORCED, pool.map(run, ENFORCED.items())))


@pytest.mark.parametrize("mutant", sorted(ENFORCED))
def test_each_enforced_rule_fails_its_mutant_on_evidence(graded_enforced, mutant):
    assert MUTANTS[mutant].why
    report = graded_enforced[mutant]
    by_id = {t.test_id: t for t in report.tests}
    check = by_id[ENFORCED[mutant]]
    assert check.outcome == "failed" and not check.evidence_ok, (check.outcome, check.message)
    assert check.message


# -- FLOP budgets (questions 2.5 and 2.6) ---------------------------------------------------------

GPT_TINY = {"n_embd": 32, "n_head": 2, "n_positions": 128, "n_layer": 2}
TRAINING = {
    "batch_size": 32,
    "seq_len": 128,
    "num_training_steps": 2000,
    "grad_accumulation_steps": 1,
}


def _yaml(path: Path, model=GPT_TINY, **training) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"output_dir": "outputs/x", "model_config": dict(model), **training}))
    return path


def test_final_budget_fails_closed_naming_what_is_missing(tmp_path):
    complete = read_config(_yaml(tmp_path / "config.yaml", **TRAINING))
    assert final_budget_problem(complete) is None
    partial = read_config(_yaml(tmp_path / "partial.yaml", batch_size=32, seq_len=128))
    problem = final_budget_problem(partial)
    assert problem is not None and "num_training_steps" in problem and "grad_accumulation_steps" in problem
    assert "partial.yaml" in problem and "1e+17" in problem
    assert "no config" in final_budget_problem(StudentConfig(path=None))


def test_train_flops_follow_the_course_formula(tmp_path):
    config = read_config(_yaml(tmp_path / "config.yaml", **TRAINING))
    assert train_flops(1000, config) == 1000 * 2000 * 1 * 32 * 128
    assert train_flops(1000, read_config(_yaml(tmp_path / "x.yaml", batch_size=4))) is None


def test_study_budget_reads_the_other_yaml_with_the_same_model(tmp_path):
    final = _yaml(tmp_path / "outputs" / "config.yaml", **{**TRAINING, "num_training_steps": 200_000})
    per_token = 5_000_000  # about GPT-tiny's 6 * n_params + attention term
    # no study config: reported as missing, for the TA (question 2.5 is graded by hand)
    missing = study_budget(tmp_path, final, GPT_TINY, per_token)
    assert missing.status == "missing" and "by hand" in missing.message
    # a study config of another model does not count
    _yaml(tmp_path / "configs" / "wide.yaml", model={**GPT_TINY, "n_embd": 64}, **TRAINING)
    assert study_budget(tmp_path, final, GPT_TINY, per_token).status == "missing"
    # the same model within 1e15 FLOPs (2000 steps * 32 * 128 tokens * 5e6 = 4.1e13)
    study = _yaml(tmp_path / "configs" / "best.yaml", **TRAINING)
    ok = study_budget(tmp_path, final, GPT_TINY, per_token)
    assert ok.status == "ok" and ok.path == study and ok.train_flops == per_token * 2000 * 32 * 128
    # over 1e15: reported with the file and the figure
    study.write_text(yaml.safe_dump({"model_config": GPT_TINY, **TRAINING, "num_training_steps": 100_000}))
    over = study_budget(tmp_path, final, GPT_TINY, per_token)
    assert over.status == "over" and "configs/best.yaml" in over.message and "1e+15" in over.message


def test_the_checkpoint_checker_applies_both_budgets(tmp_path):
    """End to end through ``tools.checkpoints``: a tiny model with a complete config is scored, one
    whose config lacks the training fields fails closed (kind "budget", the fields named), and a
    study config of the same model over 1e15 FLOPs is reported."""
    import numpy as np
    import torch

    from tools.checkpoints.export import read_submissions
    from tools.checkpoints.reference_model import Architecture, build_model
    from tools.checkpoints.runner import CheckSettings, run_check

    tiny = {"n_embd": 8, "n_head": 2, "n_positions": 16, "n_layer": 1}
    training = {
        "batch_size": 4,
        "seq_len": 16,
        "num_training_steps": 10,
        "grad_accumulation_steps": 1,
    }
    root = tmp_path / "export"
    for name in ("complete", "no_training_fields"):
        folder = root / name
        folder.mkdir(parents=True)
        torch.manual_seed(0)
        torch.save(build_model(Architecture(40, 8, 2, 16, 1), "pre_ln").state_dict(), folder / "model.pt")
        _yaml(folder / "config.yaml", model=tiny, **(training if name == "complete" else {}))
    _yaml(
        root / "complete" / "configs" / "study.yaml",
        model=tiny,
        **{**training, "num_training_steps": 10**12},
    )
    tokens = tmp_path / "test.npz"
    np.savez(tokens, test=np.random.default_rng(0).integers(0, 40, 300).astype(np.uint16))
    rows, _ = run_check(read_submissions(root), CheckSettings(test_tokens=tokens, device="cpu", variant="pre_ln"))
    by_id = {r.submission_id: r for r in rows}
    complete, closed = by_id["complete"], by_id["no_training_fields"]
    assert complete.error == "" and complete.perplexity is not None and complete.flop_budget == "ok"
    assert complete.study_budget == "over" and "configs/study.yaml" in complete.notes
    assert closed.error_kind == "budget" and not closed.passed
    assert "num_training_steps" in closed.error and "config.yaml" in closed.error
