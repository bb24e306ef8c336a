"""The handout's two FLOP budgets, checked from the YAML configs a submission hands in.

Question 2.5 (hyper-parameter study): "find the best configuration when training with at most
1e+15 FLOPs ... report the final configuration (YAML file)". Question 2.6 (final model): "Using
the model configuration reported above, train your final model ... up to 1e+17 FLOPS, but do
not change your model hyperparameters". Both count FLOPs as the course's train.py does:
``flops_per_token * num_training_steps * grad_accumulation_steps * batch_size * seq_len`` with
``flops_per_token = 6 * n_params + 12 * n_layer * n_embd * n_positions``.

* The final run's budget fails closed: a config that does not give every training field is an
  error that names the missing fields (the checkpoint cannot be credited on an unknown budget).
* The study's budget is read from the other YAML files of the submission that describe the
  checkpoint's model (same ``model_config``). Question 2.5 is graded by hand from the written
  answer, so the result is reported (``ok``, ``over``, or ``missing`` when no such file was
  handed in) for the TA, and costs the checkpoint nothing.

``tools.checkpoints`` calls these for every row (``worker``); numpy/yaml only, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tools.checkpoints.config_file import MODEL_KEYS, TRAINING_KEYS, StudentConfig, read_config
from tools.checkpoints.errors import ConfigError

STUDY_BUDGET = 1e15  # question 2.5
FINAL_BUDGET = 1e17  # question 2.6
MAX_DEPTH = 6  # folders searched below a submission for YAML files
MAX_FILES = 200  # YAML files looked at per submission


@dataclass(frozen=True)
class StudyBudget:
    """Question 2.5's budget for one checkpoint: ``status`` is ok, over or missing."""

    status: str
    message: str
    path: Path | None = None
    train_flops: int | None = None


def train_flops(flops_per_token: int, config: StudentConfig) -> int | None:
    """The course's count of a config's training FLOPs; None without every training field."""
    if not config.has_training_fields:
        return None
    t = config.training
    steps = t["num_training_steps"] * t["grad_accumulation_steps"]
    return flops_per_token * steps * t["batch_size"] * t["seq_len"]


def final_budget_problem(config: StudentConfig, limit: float = FINAL_BUDGET) -> str | None:
    """Why the final run's FLOPs cannot be counted (None when they can): the budget then fails
    closed, and the message says what the config lacks."""
    missing = [key for key in TRAINING_KEYS if key not in config.training]
    if not missing:
        return None
    where = config.path.name if config.path is not None else "the submission has no config, so it"
    return (
        f"the {limit:.0e} FLOP budget of question 2.6 cannot be checked: {where} does not give "
        f"{', '.join(missing)}; hand in the config.yaml that train.py wrote next to model.pt"
    )


def study_budget(
    folder: Path,
    final_config: Path | None,
    model: dict[str, int],
    flops_per_token: int,
    limit: float = STUDY_BUDGET,
) -> StudyBudget:
    """Question 2.5: the YAML files under ``folder`` (other than the final run's
    ``final_config``) whose ``model_config`` is ``model``, and whether one of them trains within
    ``limit`` FLOPs (the study's chosen configuration)."""
    wanted = {key: model[key] for key in MODEL_KEYS if key in model}
    candidates: list[tuple[int, Path]] = []
    unreadable: list[str] = []
    without_fields: list[Path] = []
    for path in _yaml_files(folder):
        if final_config is not None and path.resolve() == final_config.resolve():
            continue
        try:
            config = read_config(path)
        except ConfigError as err:
            unreadable.append(f"{_rel(path, folder)} ({err.message})")
            continue
        if {key: config.model.get(key) for key in wanted} != wanted:
            continue
        flops = train_flops(flops_per_token, config)
        if flops is None:
            without_fields.append(path)
        else:
            candidates.append((flops, path))
    if not candidates:
        detail = ""
        if without_fields:
            detail = f" ({', '.join(_rel(p, folder) for p in without_fields[:3])} lacks training fields)"
        elif unreadable:
            detail = f" (unreadable: {'; '.join(unreadable[:2])})"
        return StudyBudget(
            "missing",
            "no question 2.5 config with this checkpoint's model_config and its training fields "
            "was "
            f"handed in besides the final run's{detail}: its {limit:.0e} FLOP budget is checked "
            "by hand "
            "from the written answer",
        )
    flops, path = min(candidates, key=lambda c: (c[0], str(c[1])))
    if flops <= limit:
        return StudyBudget("ok", "", path, flops)
    return StudyBudget(
        "over",
        f"question 2.5: {_rel(path, folder)} (this checkpoint's model) trains {flops:.3g} FLOPs, "
        "over the "
        f"{limit:.0e} budget of the hyper-parameter study",
        path,
        flops,
    )


def _yaml_files(folder: Path) -> list[Path]:
    found = []
    for pattern in ("*.yaml", "*.yml"):
        for path in folder.rglob(pattern):
            rel = path.relative_to(folder)
            if len(rel.parts) > MAX_DEPTH or "__MACOSX" in rel.parts or path.is_symlink() or not path.is_file():
                continue
            found.append(path)
    return sorted(found, key=lambda p: (len(p.parts), str(p)))[:MAX_FILES]


def _rel(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return path.name
