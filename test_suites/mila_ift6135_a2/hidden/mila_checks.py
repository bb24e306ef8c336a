"""Shared helpers of the IFT6135 A2 hidden tests: inputs, known weights, shape diagnostics.

Nothing here computes an expected value: the grading parent compares what a test sends with the
reference's recorded values, or applies a rule of `../judges.py` to it. The shape checks only
give the student a clear message before a value is sent (`assert_shape`).
"""
import importlib.util
import zlib
from pathlib import Path

import torch


def _load_generated_weights():
    path = Path(__file__).resolve().parents[1] / "generated_weights.py"
    spec = importlib.util.spec_from_file_location("_mila_generated_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generated_values = _load_generated_weights().generated_values


def assert_shape(value, shape, what):
    """A diagnostic for the student: the value is a tensor of this shape."""
    __tracebackhide__ = True
    if not isinstance(value, torch.Tensor):
        placeholder = " (not implemented yet?)" if value is None or value is Ellipsis else ""
        raise AssertionError(  # noqa: TRY004 - a failed check, reported as a test failure
            f"{what} should be a torch tensor of shape {tuple(shape)}, got {type(value).__name__}{placeholder}"
        )
    if tuple(value.shape) != tuple(shape):
        raise AssertionError(f"{what} has shape {tuple(value.shape)}, expected {tuple(shape)}")


def fill_parameters(module, scales=None, default_scale=0.3):
    """Overwrite every parameter with values seeded by its name (not by its position).

    Tied parameters are filled once, under their first name (the embedding, which the
    provided __init__ registers before the classifier). `scales` maps a name prefix to the
    standard deviation used for it.
    """
    scales = scales or {}
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            scale = next((s for prefix, s in scales.items() if name.startswith(prefix)), default_scale)
            generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))
    return module


def set_generated_parameters(module, seed, scale):
    """Write `generated_values` into every trainable parameter of `module`, in the order of
    `parameters()`; the shapes returned let the grading parent rebuild the same values."""
    shapes = []
    with torch.no_grad():
        for index, parameter in enumerate(p for p in module.parameters() if p.requires_grad):
            values = generated_values(tuple(parameter.shape), index, seed, scale)
            parameter.copy_(torch.from_numpy(values).to(parameter.dtype))
            shapes.append([int(d) for d in parameter.shape])
    return shapes


def padded_mask(lengths, sequence_length):
    """(B, S) float mask with the first lengths[b] positions of row b set to 1."""
    positions = torch.arange(sequence_length)
    return (positions[None, :] < torch.tensor(lengths)[:, None]).float()


def nll_mistakes(log_probas, targets, mask):
    """What two common mistakes give on these inputs (the parent names them if a loss equals one):
    one mean over every real token of the batch, and a mean over every position, padding included."""
    nll = -log_probas.detach().double().gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, S)
    mask = mask.double()
    return {
        "the mean NLL over all real tokens of the batch; average each sequence over its own real "
        "tokens first, then average the sequences": float((nll * mask).sum() / mask.sum()),
        "averaged over padded positions too; only positions with mask == 1 count": float(nll.mean()),
    }
