"""Reusable property checks for suites: written once here, used by every assignment.

Each check fails through ``pytest.fail`` with a sentence a student can act on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

from grader.guards import count_ops, forbid

__all__ = [
    "assert_causal",
    "assert_loss_decreases",
    "assert_no_loop",
    "count_ops",
    "forbid",
    "op_counts",
    "perturb_after",
]


def op_counts(run: Callable[[int], object], sizes: Sequence[int] = (8, 16)) -> list[int]:
    """The number of tensor operations ``run(n)`` dispatches at each size: the raw observation
    the parent's ``no_growth`` rule judges (``snapshot.judge(key, counts, "no_growth", sizes=...)``)."""
    return [count_ops(run, n)[0] for n in sizes]


def perturb_after(
    tokens: torch.Tensor, position: int, vocab_size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A copy of the (B, S) ``tokens`` with every token after ``position`` changed: the input of
    the second half of a causality observation (``prefix_unchanged``)."""
    changed = tokens.clone()
    tail = changed[:, position + 1 :]
    if tail.numel() == 0:
        raise ValueError("position must leave at least one later token to change")
    changed[:, position + 1 :] = (
        tail + 1 + torch.randint(0, vocab_size - 1, tail.shape, generator=generator)
    ) % vocab_size
    return changed


def assert_no_loop(
    run: Callable[[int], object], sizes: Sequence[int] = (8, 16), *, what: str = "the sequence length", slack: int = 0
) -> None:
    """Fail if the number of dispatched tensor operations grows with ``what``.

    ``run(n)`` builds inputs of size ``n`` and calls the code under test. A vectorised
    implementation dispatches the same operations whatever ``n`` is; a Python loop over
    positions dispatches more as ``n`` grows. Counting operations, not timing, keeps this
    deterministic.
    """
    __tracebackhide__ = True
    counts = []
    for n in sizes:
        total, _ = count_ops(run, n)
        counts.append(total)
    if max(counts) - min(counts) > slack:
        detail = ", ".join(f"{n}: {c} ops" for n, c in zip(sizes, counts))
        pytest.fail(
            f"the number of tensor operations grows with {what} ({detail}): "
            "the handout asks for matrix operations without Python loops over positions",
            pytrace=False,
        )


def assert_causal(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    position: int,
    vocab_size: int,
    *,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
) -> None:
    """Changing the tokens after ``position`` must leave outputs up to ``position`` unchanged.

    ``logits_of(tokens)`` returns a (B, S, ...) tensor; ``tokens`` is (B, S) of token ids.
    """
    __tracebackhide__ = True
    changed = tokens.clone()
    tail = changed[:, position + 1 :]
    if tail.numel() == 0:
        raise ValueError("position must leave at least one later token to change")
    changed[:, position + 1 :] = (
        tail + 1 + torch.randint(0, vocab_size - 1, tail.shape, generator=generator)
    ) % vocab_size
    with torch.no_grad():
        before = logits_of(tokens)[:, : position + 1]
        after = logits_of(changed)[:, : position + 1]
    if before.shape != after.shape:
        pytest.fail(
            f"output shape changed with the input values: {tuple(before.shape)} vs {tuple(after.shape)}", pytrace=False
        )
    diff = (before - after).abs()
    if not torch.all(diff <= atol):
        worst = int(diff.flatten(2).amax(-1).amax(0).argmax()) if diff.dim() >= 3 else 0
        pytest.fail(
            f"not causal: changing tokens after position {position} changed the output at position {worst} "
            f"(max abs change {diff.max().item():.3g}); attention must not look at later tokens",
            pytrace=False,
        )


def assert_loss_decreases(losses: Sequence[float], *, factor: float = 0.9, what: str = "training") -> None:
    """The mean of the last quarter of ``losses`` must be below ``factor`` × the first quarter's."""
    __tracebackhide__ = True
    losses = [float(x) for x in losses]
    if len(losses) < 4:
        raise ValueError("need at least 4 losses")
    if any(x != x for x in losses):
        pytest.fail(f"{what} produced a NaN loss", pytrace=False)
    q = len(losses) // 4
    first, last = sum(losses[:q]) / q, sum(losses[-q:]) / q
    if not last < factor * first:
        pytest.fail(f"{what} did not lower the loss: {first:.4g} at the start, {last:.4g} at the end", pytrace=False)
