"""Seeding and device helpers (provided)."""
import random

import numpy as np
import torch


def seed_experiment(seed):
    """Seed python, numpy and torch (CPU and every GPU) for a repeatable run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    # The course trades bitwise GPU reproducibility for speed: cuDNN picks the fastest
    # kernels, which may differ between runs. CPU runs stay exactly repeatable.
    torch.backends.cudnn.benchmark = True


def to_device(tensors, device):
    """Move a tensor, or every tensor of a dict, to `device`."""
    if isinstance(tensors, torch.Tensor):
        return tensors.to(device=device)
    if isinstance(tensors, dict):
        return {key: to_device(tensor, device) for key, tensor in tensors.items()}
    raise NotImplementedError(f"Unknown type {type(tensors)}")
