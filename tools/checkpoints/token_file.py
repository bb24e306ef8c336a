"""The test token file: a 1-D array of token ids, read once and kept on the device.

Accepted: ``.npz`` (key from ``--test-key``, else ``test``, ``tokens``, ``val`` or the only
array; the course's ``tokens.npz`` has ``train``/``val``, the Mila WikiText-2 files have
``tokens``), ``.npy``, and raw ``.bin`` files of uint16 ids (nanoGPT's format).
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.checkpoints.errors import TestTokensError

DEFAULT_KEYS = ("test", "tokens", "val")


@dataclass(frozen=True)
class TestTokens:
    """The token ids (int64), where they came from, and a digest for merging shard outputs."""

    __test__ = False  # not a pytest class

    path: Path
    key: str
    ids: np.ndarray
    sha256: str

    @property
    def n_tokens(self) -> int:
        return int(self.ids.shape[0])

    @property
    def max_id(self) -> int:
        return int(self.ids.max())


def read_test_tokens(path: Path, key: str | None = None) -> TestTokens:
    """Read and check a test token file; raises ``TestTokensError`` naming the file."""
    if not path.is_file():
        raise TestTokensError(f"{path}: test token file not found")
    array, used_key = _read_array(path, key)
    if array.ndim != 1 or array.size < 2:
        raise TestTokensError(f"{path}[{used_key}]: expected a 1-D array of >= 2 token ids, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise TestTokensError(f"{path}[{used_key}]: token ids have dtype {array.dtype}, not integer")
    ids = array.astype(np.int64)
    if ids.min() < 0:
        raise TestTokensError(f"{path}[{used_key}]: negative token id {ids.min()}")
    digest = hashlib.sha256(ids.tobytes()).hexdigest()
    return TestTokens(path=path, key=used_key, ids=ids, sha256=digest)


def _read_array(path: Path, key: str | None) -> tuple[np.ndarray, str]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".bin":
            return np.fromfile(path, dtype=np.uint16), "uint16"
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), "array"
        with np.load(path, allow_pickle=False) as archive:
            chosen = _choose_key(archive.files, key, path)
            return archive[chosen], chosen
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise TestTokensError(f"{path}: cannot read token ids ({err})") from err


def _choose_key(files: list[str], key: str | None, path: Path) -> str:
    if key is not None:
        if key not in files:
            raise TestTokensError(f"{path}: no array {key!r} (has {files})")
        return key
    for candidate in DEFAULT_KEYS:
        if candidate in files:
            return candidate
    if len(files) == 1:
        return files[0]
    raise TestTokensError(f"{path}: several arrays {files}; choose one with --test-key")
