"""``lmgrade env``: build or check the course environments, re-resolve a lock (``grader.envs``)."""

from __future__ import annotations

import time

from grader.envs import (
    CACHE_VAR,
    ENV_VAR,
    Progress,
    _stderr_progress,
    describe_environment,
    ensure_environment,
    lock_environment,
)


def add_parsers(subparsers) -> None:
    import argparse

    p = subparsers.add_parser(
        "env",
        help="build or check course environments; `env lock ID` re-resolves a lock",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Student code runs in its course's environment: the semester's library\n"
        "versions, declared under `environment:` in assignment.yaml and pinned in\n"
        "test_suites/<id>/environment.lock. `lmgrade env ID` builds that environment\n"
        f"(once; cached in ${CACHE_VAR}, default .lmgrade/envs) and prints its path\n"
        "and versions. `lmgrade env lock ID` resolves the declared ranges with pip and\n"
        "rewrites the lock.",
        epilog="examples:\n  lmgrade env --all\n  lmgrade env lock duke_ece661_hw3\n\n"
        f"{ENV_VAR}=current runs the tests in lmgrade's own interpreter instead (developers only).",
    )
    p.add_argument("ids", nargs="*", metavar="[lock] ID", help="assignment ids, after `lock` to re-lock them")
    p.add_argument("--all", action="store_true", help="every assignment that declares an environment")
    p.add_argument("-q", "--quiet", action="store_true", help="print only what is built (no table)")
    p.set_defaults(func=cmd_env)


def cmd_env(args) -> int:
    from rich.console import Console

    from grader.assignment import list_assignments, load_assignment

    console, err = Console(highlight=False), Console(stderr=True, highlight=False)
    ids = list(args.ids)
    relock = bool(ids) and ids[0] == "lock"
    if relock:
        ids = ids[1:]
    if args.all:
        ids = list_assignments()
    if not ids:
        err.print("error: name an assignment (or --all): `lmgrade env ID`, `lmgrade env lock ID`")
        return 2
    assignments = [load_assignment(aid, check_lock=not relock) for aid in ids]
    with_env = [a for a in assignments if a.environment is not None]
    for a in assignments:
        if a.environment is None and not args.all:
            err.print(f"{a.id} declares no environment: its tests run in lmgrade's own interpreter")
    for a in with_env:
        started = time.time()
        if relock:
            pins = lock_environment(a.environment, _cli_progress(err))
            console.print(
                f"{a.id}: wrote {a.environment.lock_path} ({len(pins)} pins) in {time.time() - started:.0f} s"
            )
            a = load_assignment(a.id)
        ensure_environment(a, _cli_progress(err))
        if args.quiet:
            continue
        info = describe_environment(a)
        course = f" (the course's: {info['course_python']})" if info["course_python"] else ""
        console.print(
            f"[bold]{a.id}[/bold]: Python {info['python_version']}{course}, {info['kind']}, "
            f"{info['pins']} pinned packages",
            soft_wrap=True,
        )
        console.print(f"  {info['python']}", soft_wrap=True)
        console.print(
            "  " + ", ".join(f"{name} {version}" for name, version in info["versions"].items()),
            soft_wrap=True,
        )
    return 0


def _cli_progress(console) -> Progress:
    if console.is_terminal:
        return lambda message: console.print(f"[dim]{message}[/dim]")
    return _stderr_progress
