"""The student's YAML config: what the shapes cannot tell (``n_head``) and the training run.

The course writes ``config.yaml`` next to ``model.pt`` (``output_dir/{config.yaml, model.pt}``);
students also hand in ``configs/<name>.yaml``. Any ``*.yaml``/``*.yml`` with a ``model_config``
mapping is accepted, ``config.yaml`` first. The FLOP budget follows the course's ``train.py``:
``flops_per_token x num_training_steps x grad_accumulation_steps x batch_size x seq_len`` with
``flops_per_token = 6 * count_params + 12 * n_layer * n_embd * n_positions``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tools.checkpoints.errors import ConfigError

MODEL_KEYS = ("n_embd", "n_head", "n_positions", "n_layer")
TRAINING_KEYS = ("num_training_steps", "grad_accumulation_steps", "batch_size", "seq_len")
MAX_CONFIG_BYTES = 1_000_000


@dataclass(frozen=True)
class StudentConfig:
    """The parsed config: ``model`` holds the integer ``model_config`` entries it gave."""

    path: Path | None
    model: dict[str, int] = field(default_factory=dict)
    training: dict[str, int] = field(default_factory=dict)
    n_vocab: int | None = None

    @property
    def has_training_fields(self) -> bool:
        return all(key in self.training for key in TRAINING_KEYS)


@dataclass(frozen=True)
class FlopBudget:
    """Training FLOPs by the course formula; ``train_flops`` is None when the config lacks
    the training fields (status "unknown": the worker then fails the row closed, naming them)."""

    flops_per_token: int
    train_flops: int | None
    limit: float

    @property
    def status(self) -> str:
        if self.train_flops is None:
            return "unknown"
        return "ok" if self.train_flops <= self.limit else "over"


def find_config(folder: Path, near: Path | None = None) -> Path | None:
    """``config.yaml`` beside ``near`` (the checkpoint), then anywhere under ``folder``; then
    any YAML file with a ``model_config`` key. None when there is none."""
    candidates: list[Path] = []
    if near is not None:
        candidates.append(near.parent / "config.yaml")
    candidates += sorted(folder.rglob("config.yaml"), key=_depth_then_name)
    for path in candidates:
        if path.is_file() and _has_model_config(path):
            return path
    others = [*folder.rglob("*.yaml"), *folder.rglob("*.yml")]
    for path in sorted(others, key=_depth_then_name):
        if path.is_file() and _has_model_config(path):
            return path
    return None


def read_config(path: Path | None) -> StudentConfig:
    """Parse a student config; ``None`` gives an empty config (shapes alone then decide)."""
    if path is None:
        return StudentConfig(path=None)
    data = _load_yaml(path)
    model_section = data.get("model_config")
    if not isinstance(model_section, dict):
        raise ConfigError(path, "has no 'model_config' mapping")
    model = {
        key: _as_int(model_section[key], path, f"model_config.{key}")
        for key in MODEL_KEYS
        if model_section.get(key) is not None
    }
    training = {key: _as_int(data[key], path, key) for key in TRAINING_KEYS if data.get(key) is not None}
    n_vocab = data.get("n_vocab", model_section.get("n_vocab"))
    n_vocab = None if n_vocab is None else _as_int(n_vocab, path, "n_vocab")
    return StudentConfig(path=path, model=model, training=training, n_vocab=n_vocab)


def flop_budget(
    n_params: int, n_layer: int, n_embd: int, n_positions: int, config: StudentConfig, limit: float
) -> FlopBudget:
    """The course's FLOP count for this model and the config's training run."""
    per_token = 6 * n_params + 12 * n_layer * n_embd * n_positions
    train = None
    if config.has_training_fields:
        t = config.training
        train = per_token * t["num_training_steps"] * t["grad_accumulation_steps"] * t["batch_size"] * t["seq_len"]
    return FlopBudget(flops_per_token=per_token, train_flops=train, limit=limit)


def _load_yaml(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(path, f"is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError as err:
        raise ConfigError(path, f"is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(path, "is not a YAML mapping")
    return data


def _has_model_config(path: Path) -> bool:
    try:
        return isinstance(_load_yaml(path).get("model_config"), dict)
    except (ConfigError, OSError):
        return False


def _as_int(value: Any, path: Path, key: str) -> int:
    # YAML may give 2000, "2000", 2.0e3 or 2e3 (a string in YAML 1.1)
    try:
        number = float(value)
        whole = int(number)
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(path, f"{key}={value!r} is not a finite number") from err
    if number != whole or number < 0:
        raise ConfigError(path, f"{key}={value!r} is not a non-negative integer")
    return int(number)


def _depth_then_name(path: Path) -> tuple[int, str]:
    return (len(path.parts), str(path))
