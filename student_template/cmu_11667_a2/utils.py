"""CMU 11-667 Fall 2023, Assignment 2: helpers shared by the scripts (provided code)."""

import torch
import torch.nn as nn


def determine_device() -> str:
    """The best available accelerator: "cuda", then "mps", else "cpu"."""
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def count_params(model: nn.Module) -> int:
    """Number of parameters; a tied tensor (token embeddings = output layer) counts once."""
    return sum(p.numel() for p in model.parameters())


def enable_tf32() -> None:
    """Let matmuls and convolutions on Ampere+ GPUs use TF32 (faster, ~1e-3 relative error)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
