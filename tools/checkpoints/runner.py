"""The batch run: every submission of a shard, one row each, whatever goes wrong.

Workers (``worker.py``): each moves the test tokens to its device once and evaluates
checkpoints one after another while a background thread reads and validates the next ones
(``Prefetcher``): file reading, unpickling under ``weights_only``, shape checks and model
construction overlap with the forward passes. On a GPU node one spawned process per GPU takes
every n-th submission and rows flow back through a queue. On the CPU the workers are threads,
one per core, each running single-threaded kernels (torch releases the GIL inside kernels):
across-checkpoint parallelism with no OpenMP barriers, which on a small or busy CPU is several
times faster than one worker with intra-op threads. The parent draws the progress bar.

Variant rule (``--variant auto``, the default): the handout accepts pre-LN and post-LN blocks
and the state dict cannot tell them apart, so both reference forwards are probed on the first
windows; the better one is scored on the whole file, and if it does not pass, the other is
scored too and the better full result is reported. Pass/fail is therefore exactly "passes with
either accepted architecture", at the cost of a second pass only for failing checkpoints.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import torch

from tools.checkpoints.export import Submission
from tools.checkpoints.reference_model import decoder_class
from tools.checkpoints.results import CheckRow
from tools.checkpoints.settings import CheckSettings, check_torch_version
from tools.checkpoints.token_file import TestTokens, read_test_tokens
from tools.checkpoints.worker import Prefetcher, prepare, worker_rows

__all__ = [
    "CheckSettings",
    "Prefetcher",
    "check_torch_version",
    "prepare",
    "resolve_devices",
    "run_check",
    "shard_of",
]


def shard_of(submissions: list[Submission], shard: tuple[int, int]) -> list[Submission]:
    """Shard K of N (1-based): every N-th submission of the sorted list, starting at K."""
    k, n = shard
    if not 1 <= k <= n:
        raise ValueError(f"--shard {k}/{n}: K must be in 1..N")
    return submissions[k - 1 :: n]


def resolve_devices(settings: CheckSettings, n_submissions: int | None = None) -> list[str]:
    """One entry per worker: every visible GPU for ``cuda``/``auto``; on the CPU one worker per
    core (at most one per submission), each running single-threaded kernels."""
    wanted = settings.device
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {settings.device}: no CUDA device is visible")
    if wanted == "cuda":
        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    else:
        devices = [wanted]
    count = settings.workers or len(devices)
    if wanted == "cpu" and settings.workers is None:
        count = max(1, min(os.cpu_count() or 1, n_submissions or 1))
    return [devices[i % len(devices)] for i in range(count)]


def run_check(
    submissions: list[Submission],
    settings: CheckSettings,
    on_row: Callable[[CheckRow], None] | None = None,
) -> tuple[list[CheckRow], dict[str, Any]]:
    """Check a shard's submissions; returns rows sorted by id and the run's ``meta`` block."""
    start = time.perf_counter()
    tokens = read_test_tokens(settings.test_tokens, settings.test_key)
    mine = shard_of(submissions, settings.shard)
    devices = resolve_devices(settings, len(mine))
    for variant in settings.variants:  # import the reference once, before any thread starts
        decoder_class(variant)
    if len(devices) == 1:
        rows = list(worker_rows(devices[0], mine, tokens, settings, on_row))
    elif settings.processes or (settings.processes is None and devices[0].startswith("cuda")):
        rows = _run_processes(devices, mine, settings, on_row)
    else:
        rows = _run_threads(devices, mine, tokens, settings, on_row)
    rows.sort(key=lambda r: r.submission_id)
    meta = _meta(settings, tokens, devices, len(submissions), len(mine), time.perf_counter() - start)
    return rows, meta


# -- several workers: threads on the CPU, processes on GPUs ---------------------------------


def _run_threads(
    devices: list[str],
    submissions: list[Submission],
    tokens: TestTokens,
    settings: CheckSettings,
    on_row: Callable[[CheckRow], None] | None,
) -> list[CheckRow]:
    """CPU workers as threads: with one intra-op thread each, torch runs every kernel in the
    calling thread with the GIL released, so k workers use k cores with no OpenMP barriers and
    no process start-up; each has its own models, the token tensor is shared read-only."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.threads or max(1, (os.cpu_count() or 1) // len(devices)))
    single = replace(settings, threads=None)
    lock = threading.Lock()
    rows: list[CheckRow] = []
    errors: list[BaseException] = []

    def work(device: str, part: list[Submission]) -> None:
        try:
            for row in worker_rows(device, part, tokens, single, None):
                with lock:
                    rows.append(row)
                    if on_row is not None:
                        on_row(row)
        except Exception as err:
            errors.append(err)

    workers = [
        threading.Thread(target=work, args=(d, submissions[i :: len(devices)]), name=f"checkpoint-worker-{i}")
        for i, d in enumerate(devices)
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        torch.set_num_threads(threads_before)
    if errors:
        raise errors[0]
    return rows


def _run_processes(
    devices: list[str],
    submissions: list[Submission],
    settings: CheckSettings,
    on_row: Callable[[CheckRow], None] | None,
) -> list[CheckRow]:
    """One spawned process per GPU (CUDA cannot be forked); rows come back through a queue."""
    context = mp.get_context("spawn")
    results: Any = context.Queue()
    parts = [submissions[i :: len(devices)] for i in range(len(devices))]
    procs = [
        context.Process(
            target=_worker_process,
            args=(i, d, parts[i], settings, results),
            name=f"checkpoint-worker-{i}",
            daemon=True,
        )
        for i, d in enumerate(devices)
    ]
    for proc in procs:
        proc.start()
    rows: dict[str, CheckRow] = {}
    finished: set[int] = set()
    while len(finished) < len(procs):
        try:
            kind, index, payload = results.get(timeout=1.0)
        except queue.Empty:
            finished |= {i for i, p in enumerate(procs) if not p.is_alive() and p.exitcode != 0}
            continue
        if kind == "row":
            row = CheckRow(**payload)
            rows[row.submission_id] = row
            if on_row is not None:
                on_row(row)
        else:
            finished.add(index)
    for proc in procs:
        proc.join(timeout=10)
    for i, part in enumerate(parts):  # a worker that died leaves error rows, not gaps
        for submission in part:
            if submission.submission_id not in rows:
                rows[submission.submission_id] = CheckRow(
                    submission_id=submission.submission_id,
                    students=submission.names(),
                    emails=submission.emails(),
                    sids=submission.sids(),
                    device=devices[i],
                    error=f"worker {i} on {devices[i]} exited (code {procs[i].exitcode}) before this submission",
                    error_kind="internal",
                    score=settings.fail_points,
                )
    return list(rows.values())


def _worker_process(
    index: int, device: str, submissions: list[Submission], settings: CheckSettings, results: Any
) -> None:
    """Entry point of a spawned worker: rows go to the parent through ``results``."""
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    tokens = read_test_tokens(settings.test_tokens, settings.test_key)
    for row in worker_rows(device, submissions, tokens, settings, None):
        results.put(("row", index, asdict(row)))
    results.put(("done", index, None))


def _meta(
    settings: CheckSettings,
    tokens: TestTokens,
    devices: list[str],
    n_total: int,
    n_mine: int,
    seconds: float,
) -> dict[str, Any]:
    return {
        "shard": f"{settings.shard[0]}/{settings.shard[1]}",
        "n_submissions_total": n_total,
        "n_submissions_shard": n_mine,
        "test_tokens": str(tokens.path),
        "test_tokens_key": tokens.key,
        "test_tokens_sha256": tokens.sha256,
        "test_tokens_count": tokens.n_tokens,
        "settings": settings.protocol(),
        "devices": devices,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "seconds": round(seconds, 3),
        "protocol": (
            "disjoint windows of n_positions tokens carrying one token of context"
            if settings.stride is None
            else f"sliding windows, stride {settings.stride}"
        )
        + "; N-1 tokens scored for N test tokens; fp32 log-softmax, float64 sum",
    }
