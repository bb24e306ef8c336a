"""``lmgrade record``: run the suite on the reference (and each accepted variant) and store
what it returns as the snapshots every submission is compared with.

A variant is named in the rubric and defined as edits of the reference in
``reference/<id>/variants.yaml``; it is materialised into an overlay folder (``grader.mutants``)
and recorded from there."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from grader.assignment import Assignment
from grader.mutants import load_variants, materialise
from grader.runner import child_env, pytest_command, tail_of
from grader.snapshots import DEFAULT_VARIANT, write_manifest
from grader.submission import stage


class RecordError(RuntimeError):
    """The reference failed its own suite, so nothing was recorded."""


def record(assignment: Assignment, *, timeout: float | None = None, out: Path | None = None) -> list[str]:
    """Record every variant; replace ``fixtures/<id>/snapshots`` (or write ``out``) only if all
    succeed."""
    target_dir = out
    defined = load_variants(assignment)  # a stale edit fails here, before anything runs
    if DEFAULT_VARIANT in defined:
        raise RecordError(f"{assignment.id}: a variant may not be called {DEFAULT_VARIANT!r}")
    with (
        tempfile.TemporaryDirectory(prefix="lmgrade-record-") as tmp,
        tempfile.TemporaryDirectory(prefix="lmgrade-variants-") as overlays_tmp,
    ):
        variants: dict[str, tuple[Path, ...]] = {DEFAULT_VARIANT: ()}
        for name, variant in defined.items():
            overlay = Path(overlays_tmp) / name
            variants[name] = (materialise(variant, assignment.reference_dir, overlay, assignment),)
        out = Path(tmp) / "snapshots"
        for variant, overlays in variants.items():
            _record_variant(assignment, variant, overlays, Path(tmp) / variant, out, timeout)
        write_manifest(out, assignment.id, list(variants))
        target = target_dir or assignment.snapshots_dir
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(out, target)
    return list(variants)


def _record_variant(assignment, variant, overlays, work: Path, out: Path, timeout) -> None:
    work.mkdir(parents=True)
    staged = stage(assignment, None, work / "submission", base=assignment.reference_dir, overlays=overlays)
    if staged.errors:
        raise RecordError(f"variant {variant}: the reference is incomplete: {staged.errors}")
    outcomes = work / "outcomes.jsonl"
    cmd = pytest_command(
        assignment,
        staged.path,
        float(timeout or assignment.timeout) * 4,
        [str(assignment.suite_dir)],
        outcomes=outcomes,
        record=variant,
        snapshots=out,
    )
    log = work / "record.log"
    with open(log, "wb") as fh:
        rc = subprocess.call(
            cmd, cwd=staged.path, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env()
        )
    if rc != 0:
        raise RecordError(f"recording variant {variant!r} failed (pytest exit code {rc}):\n{tail_of(log)}")
