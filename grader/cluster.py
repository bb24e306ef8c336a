"""Running shards of a TA command as a job array through submitit (Slurm, or its local executor).

``lmgrade batch --executor slurm`` and ``lmgrade checkpoints --executor slurm`` split their work
into ``--shards N`` pieces, submit one array task per shard with ``submitit``, show progress
while the array runs, submit each failed task once more, and hand back the shards' results for
the command to merge with its usual code (the batch state of ``--resume``; ``checkpoints-merge``).
lmgrade schedules nothing itself: queueing, placement and the array are Slurm's (or submitit's
local executor's, which CI uses to test the same path).

Executors:

* ``local`` (the default): no submitit; the command runs in this process as before.
* ``slurm``: ``submitit.AutoExecutor(cluster="slurm")``; ``$LMGRADE_SUBMITIT_CLUSTER`` (``local``,
  ``debug``) swaps only the cluster, so a test drives the very ``--executor slurm`` code path.
* ``submitit-local``: submitit's local executor (one process per task, on this machine).

The submitit folder (job scripts, logs, pickled results) is ``<output>/submitit/``: it must be on
a file system the compute nodes share, as the output itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXECUTORS = ("local", "slurm", "submitit-local")
CLUSTER_VAR = "LMGRADE_SUBMITIT_CLUSTER"  # "local"/"debug": what `--executor slurm` submits to
RETRIES = 1  # a failed task is submitted once more, then reported
POLL_SECONDS = 1.0


class ClusterError(RuntimeError):
    """The array could not run, or tasks failed twice; the message names them and why."""


@dataclass
class ClusterOptions:
    """What the TA asks of the scheduler; None leaves submitit's (and the cluster's) default."""

    executor: str = "local"
    shards: int = 2
    partition: str | None = None
    timeout_min: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    gpus_per_node: int | None = None
    array_parallelism: int | None = None
    extra: dict[str, str] = field(default_factory=dict)  # more #SBATCH options: {"account": "cs123"}

    @property
    def on_cluster(self) -> bool:
        return self.executor != "local"


def add_arguments(parser, *, gpus: bool = False) -> None:
    """``--executor``, ``--shards`` and the scheduler's options, shared by batch and checkpoints."""
    group = parser.add_argument_group("cluster (through submitit)")
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local (default): here, in this process; slurm: a Slurm job array, one task per "
        "shard, merged when it ends; submitit-local: the same array on this machine",
    )
    group.add_argument(
        "--shards",
        type=int,
        default=None,
        metavar="N",
        help="array tasks with --executor slurm/submitit-local (default: 2)",
    )
    group.add_argument("--partition", help="Slurm partition")
    group.add_argument("--timeout-min", type=int, metavar="MIN", help="time limit per task, in minutes")
    group.add_argument("--cpus-per-task", type=int, metavar="N", help="CPUs per task")
    group.add_argument("--mem-gb", type=float, metavar="GB", help="memory per task")
    if gpus:
        group.add_argument("--gpus-per-node", type=int, metavar="N", help="GPUs per task")
    group.add_argument("--array-parallelism", type=int, metavar="N", help="tasks running at once (Slurm's %%N)")
    group.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another #SBATCH option, e.g. --slurm account=cs123 (repeatable)",
    )


def options_from_args(args) -> ClusterOptions:
    """ClusterOptions from parsed arguments; ValueError with a one-line reason if they are wrong."""
    shards = args.shards if args.shards is not None else 2
    if shards < 1:
        raise ValueError(f"--shards must be at least 1 (got {shards})")
    if args.shards is not None and args.executor == "local":
        raise ValueError("--shards needs --executor slurm or submitit-local (the local executor is one process)")
    extra = {}
    for item in args.slurm:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm {item!r}: expected KEY=VALUE, e.g. account=cs123")
        extra[key.strip().lstrip("-").replace("-", "_")] = value
    return ClusterOptions(
        executor=args.executor,
        shards=shards,
        partition=args.partition,
        timeout_min=args.timeout_min,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        gpus_per_node=getattr(args, "gpus_per_node", None),
        array_parallelism=args.array_parallelism,
        extra=extra,
    )


def make_executor(options: ClusterOptions, folder: Path, name: str):
    """The submitit executor the options ask for, its parameters set."""
    import os

    try:
        import submitit
    except ImportError as err:
        raise ClusterError(
            "--executor slurm needs submitit: pip install 'lmgrade[tools]' (or pip install submitit)"
        ) from err
    cluster = "local" if options.executor == "submitit-local" else os.environ.get(CLUSTER_VAR) or "slurm"
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except Exception as err:
        raise ClusterError(f"cannot use the {cluster} executor: {err}") from err
    params: dict[str, Any] = {"name": name}
    for key, value in (
        ("timeout_min", options.timeout_min),
        ("cpus_per_task", options.cpus_per_task),
        ("mem_gb", options.mem_gb),
        ("gpus_per_node", options.gpus_per_node),
        ("slurm_partition", options.partition),
        ("slurm_array_parallelism", options.array_parallelism),
    ):
        if value is not None:
            params[key] = value  # noqa: PERF403 - the pairs read as a table of Slurm settings
    if options.extra:
        params["slurm_additional_parameters"] = dict(options.extra)
    executor.update_parameters(**params)
    return executor


def run_array(
    func: Callable,
    tasks: Sequence[tuple],
    options: ClusterOptions,
    folder: Path,
    *,
    name: str,
    console=None,
    stop=None,
) -> list[Any]:
    """Run ``func(*task)`` for every task as one job array; the results in the tasks' order.

    A task that fails is submitted once more (a node lost, a transient file system error); one
    that fails again raises ClusterError naming it and the end of its error. With ``stop`` (a
    ``grader.runner.StopFlag``) requested, the array is cancelled and the tasks that had not
    finished come back as None.
    """
    executor = make_executor(options, folder, name)
    results: list[Any] = [None] * len(tasks)
    pending = list(range(len(tasks)))
    failures: dict[int, str] = {}
    for attempt in range(RETRIES + 1):
        with executor.batch():
            jobs = {i: executor.submit(func, *tasks[i]) for i in pending}
        _watch(jobs, len(tasks), len(tasks) - len(pending), name, console, stop, attempt)
        if stop is not None and stop.requested:
            for job in jobs.values():
                job.cancel(check=False)
            for i, job in jobs.items():
                if job.done() and _error(job) is None:
                    results[i] = job.result()
            return results
        pending, failures = [], {}
        for i, job in jobs.items():
            error = _error(job)
            if error is None:
                results[i] = job.result()
            else:
                pending.append(i)
                failures[i] = f"task {i + 1} of {len(tasks)} (job {job.job_id}): {error}"
        if not pending:
            return results
        if console is not None and attempt < RETRIES:
            console.print(f"[yellow]{len(pending)} task(s) failed; submitting them once more[/yellow]")
    raise ClusterError(
        f"{len(failures)} of {len(tasks)} tasks failed twice (logs in {folder}): "
        + "; ".join(failures[i] for i in sorted(failures))
    )


def _error(job) -> str | None:
    """None if the job succeeded, else the last line of why it did not."""
    try:
        exc = job.exception()
    except Exception as err:
        return f"{type(err).__name__}: {str(err).strip().splitlines()[-1:] or ''}"
    if exc is None:
        return None
    # submitit's message is the task's traceback then the log paths: the exception line says why
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    raised = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln)]
    logs = [ln.lstrip("- ") for ln in lines if ln.endswith((".err", ".out"))]
    why = raised[-1] if raised else lines[0] if lines else type(exc).__name__
    return why[:300] + (f" (log: {logs[-1]})" if logs else "")


def _watch(jobs: dict, total: int, already: int, name: str, console, stop, attempt: int) -> None:
    """Wait for every job, with a progress bar when there is a console."""

    def counts() -> tuple[int, int]:
        done = sum(1 for j in jobs.values() if j.done())
        running = sum(1 for j in jobs.values() if not j.done() and j.state == "RUNNING")
        return done, running

    label = f"{name}: array of {len(jobs)}" + (" (retry)" if attempt else "")
    if console is None:
        while counts()[0] < len(jobs) and not (stop is not None and stop.requested):
            time.sleep(POLL_SECONDS)
        return
    from rich import progress as rp

    columns = (
        rp.TextColumn(label),
        rp.BarColumn(),
        rp.MofNCompleteColumn(),
        rp.TimeElapsedColumn(),
        rp.TextColumn("{task.description}"),
    )
    with rp.Progress(*columns, console=console) as bar:
        task = bar.add_task("", total=total, completed=already)
        while True:
            done, running = counts()
            bar.update(task, completed=already + done, description=f"{running} running")
            if done == len(jobs) or (stop is not None and stop.requested):
                return
            time.sleep(POLL_SECONDS)
