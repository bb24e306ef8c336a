"""Safe loading and validation of one student checkpoint.

Nothing in a checkpoint ever runs: safetensors files are read by ``safetensors`` (no code in
the format); everything else goes through ``torch.load(weights_only=True)``, whose unpickler
only rebuilds tensors and plain containers. There is no fallback to ``weights_only=False``
(an attacker controls which error a fallback would catch). TorchScript archives are refused
before ``torch.load`` sees them (the path of CVE-2025-32434 in torch <= 2.5.1).

After loading, the object must be a state dict of floating tensors (bare, or under a
``model``/``state_dict`` key; ``module.`` and ``_orig_mod.`` prefixes are stripped), every
shape must agree with the reference ``DecoderLM`` built from the shapes plus the config's
``n_head``, and every weight must be finite.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import pickle
import pickletools
import re
import struct
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch._weights_only_unpickler
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors_file
from torch import Tensor, nn

from tools.checkpoints.config_file import FlopBudget, StudentConfig, flop_budget, read_config
from tools.checkpoints.errors import (
    RESAVE_ADVICE,
    ConfigError,
    CorruptCheckpointError,
    NonFiniteWeightsError,
    OversizedCheckpointError,
    ShapeMismatchError,
    StateDictError,
    UnsafeCheckpointError,
    VocabularyError,
)
from tools.checkpoints.reference_model import Architecture, build_model, count_params

WRAPPER_KEYS = ("model", "state_dict")
PREFIXES = ("module.", "_orig_mod.")
OPTIONAL_SUFFIXES = (".scale_factor",)  # buffers the constructor already sets
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")
MAX_LISTED = 4


@dataclass
class LoadedCheckpoint:
    """A validated checkpoint with one reference model per requested variant (on the CPU)."""

    path: Path
    sha256: str
    arch: Architecture
    config: StudentConfig
    budget: FlopBudget
    n_params: int
    models: dict[str, nn.Module]
    notes: list[str] = field(default_factory=list)
    load_seconds: float = 0.0


@dataclass(frozen=True)
class LoadLimits:
    """What a checkpoint may be: its size, the FLOP budget, the test file's largest token id."""

    max_bytes: int = 100 * 1024 * 1024
    flop_budget: float = 1e17
    max_token_id: int | None = None


def load_checkpoint(
    path: Path, config_path: Path | None, variants: tuple[str, ...], limits: LoadLimits
) -> LoadedCheckpoint:
    """Read, validate and build ``path`` for each variant; raises a ``CheckpointError``."""
    start = time.perf_counter()
    raw = read_tensors(path, limits.max_bytes)
    state, notes = unwrap_state_dict(raw, path)
    config = read_config(config_path)
    arch = infer_architecture(state, config, path)
    check_vocabulary(arch, limits.max_token_id, path)
    check_finite(state, path)
    models = {}
    for variant in variants:
        model = build_model(arch, variant)
        notes += load_into(model, state, path)
        models[variant] = model
    n_params = count_params(next(iter(models.values())))
    budget = flop_budget(n_params, arch.n_layer, arch.n_embd, arch.n_positions, config, limits.flop_budget)
    if config.training.get("seq_len", 0) > arch.n_positions:
        notes.append(f"config seq_len={config.training['seq_len']} > n_positions")
    return LoadedCheckpoint(
        path=path,
        sha256=file_sha256(path),
        arch=arch,
        config=config,
        budget=budget,
        n_params=n_params,
        models=models,
        notes=notes,
        load_seconds=time.perf_counter() - start,
    )


# -- reading bytes -------------------------------------------------------------------------


def read_tensors(path: Path, max_bytes: int) -> object:
    """The object stored in ``path``, read without running any code from it."""
    size = path.stat().st_size
    if size > max_bytes:
        raise OversizedCheckpointError(path, f"is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")
    if size == 0:
        raise CorruptCheckpointError(path, "is empty")
    with path.open("rb") as handle:
        head = handle.read(9)
    if _looks_like_safetensors(head, size):
        return _read_safetensors(path)
    is_zip = head.startswith(b"PK\x03\x04")
    if is_zip:
        _refuse_torchscript(path)
    return _torch_load_weights_only(path, mmap=is_zip)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 0 < header_len <= size - 8 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_safetensors_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as err:
        raise CorruptCheckpointError(path, f"is not a readable safetensors file: {err}") from err


def _refuse_torchscript(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise CorruptCheckpointError(path, f"is a damaged zip archive: {err}") from err
    if any(name.endswith("constants.pkl") or "/code/" in name for name in names):
        raise UnsafeCheckpointError(
            path,
            f"is a TorchScript archive (code, not weights); it was not loaded. {RESAVE_ADVICE}",
        )
    if not any(name.endswith("data.pkl") for name in names):
        raise CorruptCheckpointError(path, "is a zip archive without torch.save's data.pkl")


def _torch_load_weights_only(path: Path, mmap: bool) -> object:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise _refusal(path, mmap, err) from err
    # the bytes are untrusted and torch.load raises many types for damaged files (RuntimeError,
    # EOFError, ValueError, struct.error, ...); every one of them is a corrupt-file row
    except Exception as err:
        first_line = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise CorruptCheckpointError(
            path, f"cannot be read by torch.load ({type(err).__name__}: {first_line})"
        ) from err


def _refusal(path: Path, is_zip: bool, err: pickle.UnpicklingError) -> CorruptCheckpointError:
    """Unsafe when the pickle names a Python global the weights-only unpickler does not allow;
    otherwise (garbage bytes, a damaged stream) corrupt. Found by reading opcodes, not running."""
    names = [n for n in pickle_globals(_pickle_bytes(path, is_zip)) if not _allowed_global(n)]
    if names:
        listed = ", ".join(sorted(set(names))[:MAX_LISTED])
        return UnsafeCheckpointError(
            path,
            f"holds pickled Python objects beyond tensors ({listed}); it was refused "
            f"without running anything from it. {RESAVE_ADVICE}",
        )
    detail = next((line.strip() for line in str(err).splitlines() if "WeightsUnpickler" in line), "")
    return CorruptCheckpointError(path, f"is not a readable checkpoint ({detail or 'bad pickle'})")


def pickle_globals(data: bytes) -> list[str]:
    """``module.name`` of every global a pickle stream would import, read with ``pickletools``
    (a parser: nothing is imported or called). A damaged stream yields what precedes the damage."""
    found: list[str] = []
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", ".").replace("__builtin__.", "builtins."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except (ValueError, EOFError, KeyError, IndexError, struct.error, UnicodeDecodeError):
        pass  # damaged or not a pickle: report what was read before the damage
    return found


def _pickle_bytes(path: Path, is_zip: bool) -> bytes:
    if not is_zip:
        return path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
        return archive.read(name) if name else b""


def _allowed_global(name: str) -> bool:
    return name in _weights_only_allowlist()


@functools.lru_cache(maxsize=1)
def _weights_only_allowlist() -> frozenset[str]:
    # torch's own list (private, so read defensively); the fallback is its core
    getter = getattr(torch._weights_only_unpickler, "_get_allowed_globals", None)
    if getter is not None:
        return frozenset(getter())
    return frozenset(
        {
            "collections.OrderedDict",
            "torch._utils._rebuild_tensor_v2",
            "torch._utils._rebuild_parameter",
            "torch.FloatStorage",
            "torch.Size",
            "torch.HalfStorage",
            "torch.BFloat16Storage",
            "torch.DoubleStorage",
        }
    )


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file (identical submissions share it)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- the state dict ------------------------------------------------------------------------


def unwrap_state_dict(obj: object, source: Path) -> tuple[dict[str, Tensor], list[str]]:
    """A flat ``{name: float32 tensor}`` from a bare state dict or a ``model``/``state_dict``
    wrapper, with DataParallel / torch.compile prefixes removed."""
    notes: list[str] = []
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                notes.append(f"weights read from the {key!r} entry")
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise StateDictError(source, f"holds a {type(obj).__name__}, not a state dict. {RESAVE_ADVICE}")
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        name = _strip_prefixes(str(key))
        if not isinstance(value, Tensor):
            raise StateDictError(source, f"entry {key!r} is a {type(value).__name__}, not a tensor")
        if value.dtype not in FLOAT_DTYPES:
            raise StateDictError(source, f"entry {key!r} has dtype {value.dtype}, not floating point")
        if name in state:
            raise StateDictError(source, f"two entries map to {name!r} after removing prefixes")
        state[name] = value.to(torch.float32)
    if any(_strip_prefixes(str(k)) != str(k) for k in obj):
        notes.append("removed module./_orig_mod. prefixes")
    return state, notes


def _strip_prefixes(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


def infer_architecture(state: dict[str, Tensor], config: StudentConfig, source: Path) -> Architecture:
    """Vocabulary, width, context and depth from the shapes; heads from the config."""
    tok = _require_matrix(state, "token_embeddings.weight", source)
    pos = _require_matrix(state, "position_embeddings.weight", source)
    n_vocab, n_embd = tok.shape
    n_positions = pos.shape[0]
    if pos.shape[1] != n_embd:
        raise ShapeMismatchError(
            source,
            f"position_embeddings.weight has width {pos.shape[1]}, token_embeddings.weight has {n_embd}",
        )
    n_layer = _count_blocks(state, source)
    inferred = {"n_embd": n_embd, "n_positions": n_positions, "n_layer": n_layer}
    for key, value in inferred.items():
        if key in config.model and config.model[key] != value:
            raise ShapeMismatchError(
                source,
                f"{config.path.name} says model_config.{key}={config.model[key]}, the weights say {value}",
            )
    if config.n_vocab is not None and config.n_vocab != n_vocab:
        raise ShapeMismatchError(source, f"config n_vocab={config.n_vocab}, weights say {n_vocab}")
    n_head = _require_heads(state, config, n_embd, source)
    return Architecture(n_vocab, n_embd, n_head, n_positions, n_layer)


def _require_matrix(state: dict[str, Tensor], key: str, source: Path) -> Tensor:
    if key not in state:
        raise ShapeMismatchError(
            source,
            f"has no {key!r}; is this the course's DecoderLM? keys start {sorted(state)[:MAX_LISTED]}",
        )
    if state[key].dim() != 2:
        raise ShapeMismatchError(source, f"{key} has shape {tuple(state[key].shape)}, not 2-D")
    return state[key]


def _count_blocks(state: dict[str, Tensor], source: Path) -> int:
    indices = {int(m.group(1)) for key in state if (m := BLOCK_KEY.match(key))}
    if indices and indices != set(range(max(indices) + 1)):
        raise ShapeMismatchError(source, f"block indices {sorted(indices)} are not 0..n-1")
    return len(indices)


def _require_heads(state: dict[str, Tensor], config: StudentConfig, n_embd: int, source: Path) -> int:
    scale = state.get("blocks.0.mha.scale_factor")
    hint = ""
    if scale is not None and scale.numel() == 1 and float(scale) > 0:
        head_dim = round(1 / float(scale) ** 2)
        if head_dim and n_embd % head_dim == 0:
            hint = f" (its scale_factor suggests n_head={n_embd // head_dim})"
    if "n_head" not in config.model:
        where = f"{config.path.name} has no model_config.n_head" if config.path else "no config.yaml"
        raise ConfigError(
            source,
            f"{where}: n_head cannot be read from the weights{hint}; submit the config.yaml your training run wrote",
        )
    n_head = config.model["n_head"]
    if n_head == 0 or n_embd % n_head:
        raise ConfigError(config.path, f"n_head={n_head} does not divide n_embd={n_embd}")
    if scale is not None and scale.numel() == 1:
        expected = 1 / math.sqrt(n_embd // n_head)
        if not math.isclose(float(scale), expected, rel_tol=1e-3):
            raise ConfigError(
                config.path,
                f"n_head={n_head} gives scale 1/sqrt({n_embd // n_head}) "
                f"but the weights were trained with {float(scale):.4g}{hint}",
            )
    return n_head


def check_vocabulary(arch: Architecture, max_token_id: int | None, source: Path) -> None:
    """Every test token id must exist in the checkpoint's vocabulary (never clipped)."""
    if max_token_id is not None and max_token_id >= arch.n_vocab:
        raise VocabularyError(
            source,
            f"vocabulary has {arch.n_vocab} tokens but the test file "
            f"uses id {max_token_id}; was it trained with tiktoken gpt2?",
        )


def check_finite(state: dict[str, Tensor], source: Path) -> None:
    """Refuse NaN / infinite weights, naming the first tensors that hold them."""
    bad = [key for key, value in state.items() if not torch.isfinite(value).all()]
    if bad:
        raise NonFiniteWeightsError(
            source,
            f"NaN or inf in {', '.join(bad[:MAX_LISTED])}{' ...' if len(bad) > MAX_LISTED else ''}",
        )


def load_into(model: nn.Module, state: dict[str, Tensor], source: Path) -> list[str]:
    """Copy ``state`` into ``model`` after checking keys and shapes; returns notes."""
    expected = model.state_dict()
    notes: list[str] = []
    unexpected = [k for k in state if k not in expected]
    tied = [k for k in unexpected if _is_tied_copy(state, k)]
    if tied:
        notes.append(f"ignored tied copies of token_embeddings.weight: {', '.join(tied)}")
    unexpected = [k for k in unexpected if k not in tied]
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIXES)]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = _describe("missing", missing) + _describe("unexpected", unexpected) + _describe("wrong shape", wrong)
    if problems:
        raise ShapeMismatchError(
            source,
            "does not fit the DecoderLM built from the shapes and config: " + "; ".join(problems),
        )
    merged = {k: state.get(k, v) for k, v in expected.items()}
    model.load_state_dict(merged, strict=True)
    return notes


def _is_tied_copy(state: dict[str, Tensor], key: str) -> bool:
    emb = state["token_embeddings.weight"]
    return state[key].shape == emb.shape and torch.equal(state[key], emb)


def _describe(label: str, keys: list[str]) -> list[str]:
    if not keys:
        return []
    more = f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return [f"{label}: {', '.join(keys[:MAX_LISTED])}{more}"]
