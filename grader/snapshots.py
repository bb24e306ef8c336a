"""Snapshot files: the reference's values per test, recorded by ``lmgrade record``.

Layout under ``fixtures/<id>/snapshots/``::

    <variant>/<test file path without .py>.json          keys, tolerances, value trees
    <variant>/<test file path without .py>.safetensors   the arrays (never pickles)
    manifest.json                                        every key per test + sha256 per file

A test file's snapshots for all its tests live in one pair of files. Tolerances and masks are
stored with the expected value at record time, so the comparing side never takes them from
the (possibly untrusted) process that produced the value under test.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from grader.assignment import is_public
from grader.compare import Tolerance, compare
from grader.judges import Evidence, RuleBook
from grader.values import Tree, decode

FORMAT = 1
DEFAULT_VARIANT = "reference"


class SnapshotError(RuntimeError):
    """Snapshots missing, stale or tampered with; the message says how to re-record."""


@dataclass(frozen=True)
class Expected:
    tree: Tree
    tol: Tolerance
    mask_ref: str | None
    hint: str | None


def split_test_id(test_id: str) -> tuple[str, str]:
    """'hidden/test_model.py::test_x[a]' -> ('hidden/test_model', 'test_x[a]')."""
    path, _, name = test_id.partition("::")
    return path.removesuffix(".py"), name


class SnapshotStore:
    """Read side: lazily loads one test file's snapshots per variant."""

    def __init__(self, root: Path, variants: list[str] | None = None, rules: RuleBook | None = None):
        self.root = Path(root)
        self.rules = rules if rules is not None else RuleBook()
        self.manifest = _read_json(self.root / "manifest.json") if (self.root / "manifest.json").is_file() else None
        if variants is None:
            variants = self.manifest["variants"] if self.manifest else [DEFAULT_VARIANT]
        self.variants = variants
        self._cache: dict[tuple[str, str], tuple[dict, dict[str, np.ndarray]]] = {}

    def _load(self, variant: str, module: str) -> tuple[dict, dict[str, np.ndarray]]:
        key = (variant, module)
        if key not in self._cache:
            base = self.root / variant / module
            meta_path, arr_path = base.with_suffix(".json"), base.with_suffix(".safetensors")
            if not meta_path.is_file():
                self._cache[key] = ({"tests": {}}, {})
            else:
                self._verify(meta_path)
                arrays = {}
                if arr_path.is_file():
                    self._verify(arr_path)
                    arrays = load_file(str(arr_path))
                self._cache[key] = (_read_json(meta_path), arrays)
        return self._cache[key]

    def _verify(self, path: Path) -> None:
        if not self.manifest:
            return
        rel = path.relative_to(self.root).as_posix()
        want = self.manifest["files"].get(rel)
        if want is not None and want != _sha256(path):
            raise SnapshotError(
                f"snapshot file {rel} does not match its manifest checksum; re-record with `lmgrade record`"
            )

    def expected_keys(self, test_id: str, variant: str) -> list[str] | None:
        module, name = split_test_id(test_id)
        meta, _ = self._load(variant, module)
        test = meta["tests"].get(name)
        return None if test is None else list(test)

    def has_test(self, test_id: str) -> bool:
        return any(self.expected_keys(test_id, v) is not None for v in self.variants)

    def entry(self, test_id: str, variant: str, key: str) -> dict | None:
        module, name = split_test_id(test_id)
        meta, _ = self._load(variant, module)
        return meta["tests"].get(name, {}).get(key)

    def compare_key(
        self,
        test_id: str,
        variant: str,
        key: str,
        actual: Tree,
        actual_arrays,
        *,
        reveal: bool,
        seen: dict | None = None,
    ) -> list[str] | None:
        """Problems with the value sent for ``key`` in ``variant``: compared with the recorded
        value, or judged by the recorded rule. None if nothing was recorded for the key."""
        module, name = split_test_id(test_id)
        meta, arrays = self._load(variant, module)
        entry = meta["tests"].get(name, {}).get(key)
        if entry is None:
            return None
        if entry.get("rule"):
            ev = Evidence(
                key=key,
                value=decode(actual, actual_arrays),
                params=entry.get("params") or {},
                expected=decode(entry["tree"], arrays),
                seen=seen or {},
                reveal=reveal,
            )
            problems = self.rules.evaluate(entry["rule"], ev)
        else:
            mask = arrays[entry["mask"]] if entry.get("mask") else None
            tol = Tolerance(entry["rtol"], entry["atol"])
            problems = compare(
                entry["tree"],
                arrays,
                actual,
                actual_arrays,
                tol=tol,
                mask=mask,
                reveal=reveal,
                path=f"`{key}`",
                dtypes=entry.get("dtypes"),
            )
        hint = entry.get("hint")
        if problems and hint:
            problems[-1] += f" (hint: {hint})"
        return problems

    def match(
        self,
        test_id: str,
        alive: list[str],
        key: str,
        actual: Tree,
        actual_arrays,
        *,
        reveal: bool,
        seen: dict | None = None,
    ) -> tuple[list[str], list[str] | None]:
        """Compare in every variant still accepted for the test: (variants, problems).

        ``problems`` is None if no variant recorded ``key``; on a match it is empty and the
        variants are narrowed to those that matched (one variant for the whole test); otherwise
        it holds the first recorded variant's problems and the variants are unchanged.
        """
        results = {v: self.compare_key(test_id, v, key, actual, actual_arrays, reveal=reveal, seen=seen) for v in alive}
        recorded = {v: r for v, r in results.items() if r is not None}
        if not recorded:
            return alive, None
        passing = [v for v, problems in recorded.items() if not problems]
        if passing:
            return passing, []
        return alive, next(iter(recorded.values()))


class SnapshotWriter:
    """Write side: collects checks during ``lmgrade record`` and writes files at the end."""

    def __init__(self, root: Path, variant: str):
        self.root, self.variant = Path(root), variant
        self._modules: dict[str, tuple[dict, dict[str, np.ndarray]]] = {}

    def add(
        self,
        test_id: str,
        key: str,
        tree: Tree,
        arrays: dict[str, np.ndarray],
        tol: Tolerance,
        mask: np.ndarray | None,
        hint: str | None,
        rule: str | None = None,
        params: dict | None = None,
        dtypes=None,
    ) -> None:
        module, name = split_test_id(test_id)
        meta, all_arrays = self._modules.setdefault(module, ({"format": FORMAT, "tests": {}}, {}))
        test = meta["tests"].setdefault(name, {})
        if key in test:
            raise SnapshotError(f"{test_id}: key {key!r} checked twice; use distinct keys")
        prefix = f"{name}::{key}::"
        renamed = _prefix_refs(tree, prefix)
        for ref, arr in arrays.items():
            all_arrays[prefix + ref] = np.ascontiguousarray(arr).reshape(np.shape(arr))
        mask_ref = None
        if mask is not None:
            mask_ref = prefix + "mask"
            all_arrays[mask_ref] = np.ascontiguousarray(np.asarray(mask, dtype=bool))
        test[key] = {"tree": renamed, "rtol": tol.rtol, "atol": tol.atol, "mask": mask_ref, "hint": hint}
        if dtypes:
            test[key]["dtypes"] = sorted(dtypes)
        if rule is not None:
            test[key]["rule"] = rule
            test[key]["params"] = dict(params or {})

    def add_empty(self, test_id: str) -> None:
        """A test that passed but checked nothing still gets an entry (its key set is empty)."""
        module, name = split_test_id(test_id)
        meta, _ = self._modules.setdefault(module, ({"format": FORMAT, "tests": {}}, {}))
        meta["tests"].setdefault(name, {})

    def write(self) -> list[Path]:
        written = []
        for module, (meta, arrays) in sorted(self._modules.items()):
            base = self.root / self.variant / module
            base.parent.mkdir(parents=True, exist_ok=True)
            meta_path = base.with_suffix(".json")
            meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            written.append(meta_path)
            arr_path = base.with_suffix(".safetensors")
            if arrays:
                save_file(arrays, str(arr_path))
                written.append(arr_path)
            elif arr_path.exists():
                arr_path.unlink()
        return written


def write_manifest(root: Path, assignment_id: str, variants: list[str]) -> Path:
    """Checksums of every snapshot file and the key set of every test, per variant."""
    files = {}
    tests: dict[str, dict] = {}
    for variant in variants:
        for path in sorted((root / variant).rglob("*")):
            if path.is_file():
                files[path.relative_to(root).as_posix()] = _sha256(path)
            if path.suffix == ".json":
                module = path.relative_to(root / variant).with_suffix("").as_posix()
                for name, keys in _read_json(path)["tests"].items():
                    test_id = f"{module}.py::{name}"
                    entry = tests.setdefault(
                        test_id, {"visibility": "public" if is_public(module) else "hidden", "keys": {}}
                    )
                    entry["keys"][variant] = sorted(keys)
    manifest = {"format": FORMAT, "assignment": assignment_id, "variants": variants, "files": files, "tests": tests}
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _prefix_refs(tree: Tree, prefix: str) -> Tree:
    if "ref" in tree:
        return {**tree, "ref": prefix + tree["ref"]}
    if tree["t"] in ("list", "tuple"):
        return {**tree, "items": [_prefix_refs(t, prefix) for t in tree["items"]]}
    if tree["t"] == "dict":
        return {**tree, "items": [[_prefix_refs(k, prefix), _prefix_refs(v, prefix)] for k, v in tree["items"]]}
    return tree


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parent_decided_points(assignment) -> float:
    """Points of the rubric's tests the grading parent decides: every case of the test records at
    least one value (compared, or judged by a rule) in every variant, and the rubric does not
    leave its verdict to the test process (``child_judged``)."""
    manifest_path = assignment.snapshots_dir / "manifest.json"
    if not manifest_path.is_file():
        return 0.0
    tests = _read_json(manifest_path).get("tests", {})
    total = 0.0
    for spec in assignment.tests:
        if assignment.is_child_judged(spec.test_id):
            continue
        cases = [e for tid, e in tests.items() if tid == spec.test_id or tid.startswith(spec.test_id + "[")]
        if cases and all(e["keys"] and all(keys for keys in e["keys"].values()) for e in cases):
            total += spec.points
    return total
