"""``lmgrade checkpoints`` and ``lmgrade checkpoints-merge``: the argparse side.

``add_parsers(subparsers)`` registers both subcommands on the lead's ``lmgrade`` parser (each
sets ``func``, which takes the parsed args and returns an exit code); ``run_demo(out_dir)`` is
what ``lmgrade demo`` calls. Until then: ``python -m tools.checkpoints ...``.

Exit codes: 0 when every submission got a row (error rows included: a corrupt or malicious
checkpoint is a result, not a failure of the run); 2 when the run itself cannot start (no test
file, unreadable export, bad option).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from tqdm import tqdm

from tools.checkpoints.errors import ExportError, TestTokensError
from tools.checkpoints.export import read_submissions
from tools.checkpoints.results import (
    CheckRow,
    json_twin,
    merge_results,
    write_gradescope_scores,
    write_results,
)
from tools.checkpoints.summary import print_summary

if TYPE_CHECKING:
    from tools.checkpoints.runner import CheckSettings

# torch is imported only when a command runs: registering the verbs on ``lmgrade`` must not
# load it (the grading parent process stays light, see DESIGN.md)
ASSIGNMENTS = ("cmu_11667_a2",)
VARIANTS = ("pre_ln", "post_ln")  # reference_model.VARIANTS (a test keeps them equal)
err_console = Console(stderr=True, highlight=False)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``checkpoints`` and ``checkpoints-merge`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "checkpoints",
        help="check every submission's model.pt for test perplexity (Q2.6)",
        description="Score each submission's model.pt on a test token file with the reference "
        "DecoderLM and write one row per submission (CSV + JSON).",
        epilog="demo: `lmgrade demo cmu_11667_a2` builds a small Gradescope export of checkpoints "
        "(trained, under-trained, post-LN, a malicious pickle) from the fixtures, checks it on the "
        "synthetic test file and verifies every row; results in demo-out/cmu_11667_a2/.",
    )
    p.add_argument("assignment", choices=ASSIGNMENTS)
    p.add_argument(
        "submissions",
        type=Path,
        help="Gradescope export folder, folder of folders, or one submission",
    )
    p.add_argument("--test-tokens", type=Path, required=True, help=".npz/.npy/.bin token ids")
    p.add_argument("--test-key", help="array name inside the .npz (default: test, tokens, val)")
    p.add_argument("--threshold", type=float, default=50.0, help="pass when perplexity < this (default 50)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (every GPU) or cuda:N")
    p.add_argument(
        "--dtype",
        choices=("fp32", "bf16"),
        default="fp32",
        help="fp32 (exact, default) or bf16 autocast (log-softmax stays fp32)",
    )
    p.add_argument("--batch-size", type=_positive, help="windows per forward pass (default: automatic)")
    p.add_argument(
        "--stride",
        type=_positive,
        help="sliding windows moving this many tokens, at most each model's context (default: disjoint windows)",
    )
    p.add_argument(
        "--variant",
        choices=("auto", *VARIANTS),
        default="auto",
        help="block layout to evaluate with; auto = the better of pre-LN and post-LN",
    )
    p.add_argument(
        "--attention",
        choices=("auto", "sdpa", "module"),
        default="auto",
        help="auto/sdpa: fused attention when it matches the reference on the first window",
    )
    p.add_argument(
        "--no-fast-path",
        action="store_true",
        help="score every window with the model's own full forward (slower; same protocol)",
    )
    p.add_argument("--max-size-mb", type=float, default=100.0, help="refuse larger files (course: 100)")
    p.add_argument("--flop-budget", type=float, default=1e17, help="training FLOP limit (handout: 1e17)")
    p.add_argument("--points", type=float, default=20.0, help="score of a passing submission")
    p.add_argument("--fail-points", type=float, default=0.0, help="score otherwise")
    p.add_argument("--shard", type=_shard, default=(1, 1), metavar="K/N", help="check shard K of N (1-based)")
    p.add_argument(
        "--workers",
        type=_positive,
        help="workers (default: one process per GPU; on the CPU one thread per core)",
    )
    p.add_argument("--prefetch", type=_positive, default=2, help="checkpoints loaded ahead (default 2)")
    p.add_argument("--threads", type=_positive, help="torch CPU threads per worker")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("checkpoints.csv"),
        help="CSV path; the JSON twin is written beside it",
    )
    p.add_argument("--gradescope-csv", type=Path, help="also write Name,SID,Email,Score per student")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from grader.cluster import add_arguments

    add_arguments(p, gpus=True)  # --executor slurm: one array task per shard, merged at the end
    p.set_defaults(func=cmd_checkpoints)

    m = subparsers.add_parser("checkpoints-merge", help="join the shard outputs of lmgrade checkpoints")
    m.add_argument("inputs", type=Path, nargs="+", help="shard .json (checked for completeness) or .csv files")
    m.add_argument("-o", "--output", type=Path, required=True, help="merged CSV (JSON twin beside it)")
    m.add_argument("--gradescope-csv", type=Path, help="also write Name,SID,Email,Score per student")
    m.set_defaults(func=cmd_merge)


def settings_from_args(args: argparse.Namespace) -> CheckSettings:
    """The one settings object the runner takes."""
    from tools.checkpoints.runner import CheckSettings

    return CheckSettings(
        test_tokens=args.test_tokens,
        test_key=args.test_key,
        threshold=args.threshold,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        stride=args.stride,
        variant=args.variant,
        attention=args.attention,
        max_size_mb=args.max_size_mb,
        flop_budget=args.flop_budget,
        points=args.points,
        fail_points=args.fail_points,
        shard=args.shard,
        workers=args.workers,
        prefetch=args.prefetch,
        threads=args.threads,
        fast_path=not args.no_fast_path,
    )


def cmd_checkpoints(args: argparse.Namespace) -> int:
    """Run the checker over a submissions folder; write CSV + JSON; print a summary."""
    from grader.cluster import ClusterError, options_from_args
    from tools.checkpoints.reference_model import ReferenceImportError
    from tools.checkpoints.runner import check_torch_version

    try:
        cluster = options_from_args(args)
        if cluster.on_cluster and args.shard != (1, 1):
            raise ValueError("--shard with --executor: the job array makes the shards (give --shards N)")
    except ValueError as err:
        err_console.print(f"[red]error:[/red] {err}")
        return 2
    if cluster.on_cluster:
        try:
            return _checkpoints_on_cluster(args, cluster)
        except (ExportError, TestTokensError, ClusterError, ValueError) as err:
            err_console.print(f"[red]error:[/red] {err}")
            return 2
    try:
        warning = check_torch_version()
        settings = settings_from_args(args)
        submissions = read_submissions(args.submissions)
        rows, meta = _run_with_progress(submissions, settings, show=not args.no_progress)
    except (ExportError, TestTokensError, ReferenceImportError, RuntimeError, ValueError) as err:
        err_console.print(f"[red]error:[/red] {err}")
        return 2
    if warning:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    _write(rows, meta, args.output, args.gradescope_csv)
    print_summary(rows, settings.threshold)
    return 0


def _checkpoints_on_cluster(args: argparse.Namespace, cluster) -> int:
    """One array task per shard (``check_shard``), then the shards merged as checkpoints-merge
    merges them; the submitit folder (scripts, logs) is ``<output>-submitit/`` beside the CSV."""
    from dataclasses import replace

    from grader.cluster import run_array

    settings = settings_from_args(args)
    read_submissions(args.submissions)  # a bad export fails here, before anything is queued
    n = cluster.shards
    folder = args.output.resolve().parent / f"{args.output.stem}-submitit"
    tasks = [
        (
            args.submissions.resolve(),
            replace(settings, shard=(k, n)),
            folder / f"shard-{k}-of-{n}.csv",
        )
        for k in range(1, n + 1)
    ]
    paths = run_array(
        check_shard,
        tasks,
        cluster,
        folder,
        name="lmgrade-checkpoints",
        console=None if args.no_progress else err_console,
    )
    rows, meta = merge_results(paths)
    _write(rows, meta, args.output, args.gradescope_csv)
    print_summary(rows, settings.threshold)
    return 0


def check_shard(submissions: Path, settings: CheckSettings, output: Path) -> Path:
    """One array task: check shard ``settings.shard`` of the export; its JSON result's path."""
    from tools.checkpoints.runner import run_check

    rows, meta = run_check(read_submissions(submissions), settings)
    output.parent.mkdir(parents=True, exist_ok=True)
    return write_results(rows, output, meta)


def cmd_merge(args: argparse.Namespace) -> int:
    """Join shard outputs into one CSV + JSON (and optionally the Gradescope file)."""
    try:
        rows, meta = merge_results(args.inputs)
    except (OSError, ValueError, KeyError) as err:
        err_console.print(f"[red]error:[/red] {err}")
        return 2
    _write(rows, meta, args.output, args.gradescope_csv)
    print_summary(rows, None)
    return 0


def _run_with_progress(submissions, settings: CheckSettings, show: bool):
    from tools.checkpoints.runner import run_check

    total = len(submissions[settings.shard[0] - 1 :: settings.shard[1]])
    with tqdm(
        total=total,
        unit="ckpt",
        desc="checkpoints",
        disable=not show,
        file=sys.stderr,
        dynamic_ncols=True,
    ) as bar:

        def on_row(row: CheckRow) -> None:
            bar.set_postfix_str(
                f"{row.submission_id}: "
                + (f"ppl {row.perplexity:.2f}" if row.perplexity is not None else row.error_kind)
            )
            bar.update(1)

        return run_check(submissions, settings, on_row=on_row)


def _write(rows: list[CheckRow], meta: dict, output: Path, gradescope: Path | None) -> None:
    json_path = write_results(rows, output, meta)
    err_console.print(f"wrote {output} and {json_path if json_path != output else json_twin(output)}")
    if gradescope is not None:
        write_gradescope_scores(rows, gradescope)
        err_console.print(f"wrote {gradescope}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected K/N, e.g. 2/8") from err
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: K must be in 1..N")
    return k, n


def run_demo(out_dir: Path) -> int:
    """Materialise the demo export under ``out_dir`` and check it (``lmgrade demo`` calls this)."""
    from tools.checkpoints.demo import run_demo as _run_demo

    return _run_demo(out_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.checkpoints``: the two subcommands and ``demo``."""
    parser = argparse.ArgumentParser(prog="python -m tools.checkpoints")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_parsers(sub)
    d = sub.add_parser("demo", help="build a demo export (pass, fail, corrupt, malicious, ...) and check it")
    d.add_argument("-o", "--out", type=Path, default=Path("demo-out/checkpoints"))
    d.set_defaults(func=lambda a: run_demo(a.out))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)
