"""Seeds, in one place: the plugin's per-test seed, seeding every generator, and parameters
filled from a seed and their names (what suites use instead of a student's random init).

Light on purpose (torch is imported only when used): suites' conftests import it at collection.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from pathlib import Path


def seed_for(test_id: str) -> int:
    """Seed from the test file's name and the test's name (not its folder): the same for the
    reference when recording and for a submission when grading, wherever the suite is unpacked."""
    file, _, name = test_id.partition("::")
    digest = hashlib.sha256(f"{Path(file).name}::{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy's global generator and torch's, as the plugin does before each test
    and as course harnesses do before a run."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fill_parameters(model, seed: int = 0):
    """Give every parameter of ``model`` values that depend only on its name and ``seed``.

    Handouts fix parameter names (q_attn, ln_1, lora_A, ...), not the order in which a student's
    ``__init__`` draws random numbers, so tests never rely on the init: 1-d weights (norm gains)
    near 1, biases small, matrices (linear, embedding, LoRA A and B) at unit output scale.
    Buffers (a registered causal mask) are left as the model made them.
    """
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            noise = torch.randn(param.shape, generator=gen)
            if param.dim() == 1 and name.endswith("weight"):  # norm gains
                value = 1 + 0.1 * noise
            elif param.dim() == 1:  # biases
                value = 0.1 * noise
            else:  # (out, in) matrices, embeddings, A and B: unit-scale outputs
                value = noise / param.shape[1] ** 0.5
            param.copy_(value.to(param.dtype))
    return model
