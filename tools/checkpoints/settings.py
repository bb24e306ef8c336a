"""The one settings object of a checker run, and the torch version gate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tools.checkpoints.reference_model import VARIANTS

MIN_TORCH = (2, 6)  # weights_only=True is safe from CVE-2025-32434 only from 2.6
RECOMMENDED_TORCH = (2, 10)  # CVE-2026-24747 (weights_only unpickler memory corruption)


@dataclass(frozen=True)
class CheckSettings:
    """Everything one ``lmgrade checkpoints`` run needs (the CLI fills it from its flags)."""

    test_tokens: Path
    test_key: str | None = None
    threshold: float = 50.0
    device: str = "auto"
    dtype: str = "fp32"
    batch_size: int | None = None
    stride: int | None = None
    variant: str = "auto"
    attention: str = "auto"
    max_size_mb: float = 100.0
    flop_budget: float = 1e17
    points: float = 20.0
    fail_points: float = 0.0
    shard: tuple[int, int] = (1, 1)
    workers: int | None = None
    prefetch: int = 2
    chunk_bytes: int | None = None
    fast_path: bool = True
    threads: int | None = None
    processes: bool | None = None  # None: processes for GPUs, threads for CPU workers

    def protocol(self) -> dict[str, Any]:
        """The settings that change results (must agree across merged shards)."""
        return {
            "threshold": self.threshold,
            "dtype": self.dtype,
            "stride": self.stride,
            "variant": self.variant,
            "max_size_mb": self.max_size_mb,
            "flop_budget": self.flop_budget,
            "points": self.points,
            "fail_points": self.fail_points,
        }

    @property
    def variants(self) -> tuple[str, ...]:
        return VARIANTS if self.variant == "auto" else (self.variant,)


def check_torch_version() -> str | None:
    """Refuse torch < 2.6 (unsafe weights_only); return a warning for < 2.10, else None."""
    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if version < MIN_TORCH:
        raise RuntimeError(
            f"torch {torch.__version__} < 2.6: weights_only loading is not safe "
            "there (CVE-2025-32434); upgrade torch before checking checkpoints"
        )
    if version < RECOMMENDED_TORCH:
        return f"torch {torch.__version__} < 2.10 is affected by CVE-2026-24747; upgrade"
    return None
