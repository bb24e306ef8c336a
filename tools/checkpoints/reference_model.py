"""The architecture a checkpoint is evaluated with: the reference ``DecoderLM`` of
``reference/cmu_11667_a2`` (pre-LN) or its post-LN variant, both accepted by the handout; the
variant is the reference's ``model.py`` with the edits of its ``variants.yaml`` applied.

The checker never runs student code: the state dict alone fixes every shape but not the
block's layer-norm placement, so the forward function is fixed by rule (``--variant``).
The reference files do ``from utils import count_params``; they are imported under private
module names with ``utils`` bound to the reference's own ``utils.py`` only while they load, so
nothing named ``utils`` or ``model`` leaks into (or is taken from) ``sys.modules``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from grader import project_root

REPO_ROOT = project_root()
DEFAULT_REFERENCE_DIR = REPO_ROOT / "reference" / "cmu_11667_a2"
REFERENCE_ENV = "LMGRADE_CKPT_REFERENCE"
VARIANTS = ("pre_ln", "post_ln")  # post_ln: an entry of the reference's variants.yaml


class ReferenceImportError(Exception):
    """The reference model file is missing or does not define ``DecoderLM``."""


@dataclass(frozen=True)
class Architecture:
    """The DecoderLM hyper-parameters; ``n_head`` comes from the config, the rest from shapes."""

    n_vocab: int
    n_embd: int
    n_head: int
    n_positions: int
    n_layer: int

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def reference_dir() -> Path:
    """The folder holding the reference ``model.py`` (env ``LMGRADE_CKPT_REFERENCE`` overrides)."""
    return Path(os.environ.get(REFERENCE_ENV, DEFAULT_REFERENCE_DIR)).resolve()


@functools.cache
def decoder_class(variant: str, ref_dir: Path | None = None) -> type[nn.Module]:
    """``DecoderLM`` of the given variant (``pre_ln`` or ``post_ln``), imported once."""
    if variant not in VARIANTS:
        raise ReferenceImportError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    base = ref_dir or reference_dir()
    name = f"_lmgrade_ckpt_ref_{variant}"
    if variant == "pre_ln":
        module = _import_isolated(base / "model.py", base, name)
    else:
        with tempfile.TemporaryDirectory(prefix="lmgrade-ckpt-variant-") as tmp:
            module = _import_isolated(_materialise(base, variant, Path(tmp)), base, name)
    path = base / "model.py"
    if not hasattr(module, "DecoderLM"):
        raise ReferenceImportError(f"{path} does not define DecoderLM")
    return module.DecoderLM


def build_model(arch: Architecture, variant: str, ref_dir: Path | None = None) -> nn.Module:
    """A reference DecoderLM for ``arch`` in eval mode with dropout 0 (weights are overwritten)."""
    cls = decoder_class(variant, ref_dir)
    model = cls(arch.n_vocab, arch.n_embd, arch.n_head, arch.n_positions, arch.n_layer, p_dropout=0.0)
    return model.eval()


def count_params(model: nn.Module) -> int:
    """Parameters as the course counts them: ``model.parameters()``, a tied tensor once."""
    return sum(p.numel() for p in model.parameters())


def _materialise(base: Path, variant: str, dest: Path) -> Path:
    """``model.py`` of a variant of the reference, written into ``dest``."""
    from grader.mutants import EditError, load_edits, materialise

    edits_file = base / "variants.yaml"
    try:
        variants = {}
        if edits_file.is_file():
            variants = {v.name: v for v in load_edits(edits_file, "variant")}
        if variant not in variants:
            raise ReferenceImportError(f"{edits_file} does not define the variant {variant!r}")
        return materialise(variants[variant], base, dest) / "model.py"
    except EditError as err:
        raise ReferenceImportError(str(err)) from err


def _import_isolated(path: Path, base: Path, name: str) -> ModuleType:
    if not path.is_file():
        raise ReferenceImportError(f"reference model file not found: {path}")
    saved_modules = {key: sys.modules.get(key) for key in ("utils", "model")}
    saved_path = list(sys.path)
    try:
        sys.modules["utils"] = _load_module(base / "utils.py", "_lmgrade_ckpt_ref_utils")
        sys.modules.pop("model", None)
        sys.path[:0] = [str(path.parent), str(base)]
        return _load_module(path, name)
    finally:
        sys.path[:] = saved_path
        for key, value in saved_modules.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


def _load_module(path: Path, name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ReferenceImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as err:
        del sys.modules[name]
        raise ReferenceImportError(f"importing {path} failed: {err}") from err
    return module


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
