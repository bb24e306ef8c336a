"""The test process's command line: one table of the plugin's options, used by both sides.

``grader.plugin`` registers these options with pytest; ``grader.runner`` and ``grader.record``
build the child's command from the same table, so a flag is named in one place only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flag:
    flag: str
    help: str
    switch: bool = False  # a flag without a value
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    default: str | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return "lmgrade_" + self.flag.removeprefix("--").removeprefix("lmgrade-").replace("-", "_")


FLAGS: dict[str, Flag] = {
    "submission": Flag(
        "--submission",
        "folder of the submission under test (the files the handout names)",
        aliases=("--lmgrade-submission",),
    ),
    "assignment": Flag(
        "--lmgrade-assignment", "assignment id (default: the assignment.yaml above the collected tests)"
    ),
    "record": Flag(
        "--lmgrade-record", "record snapshots from the submission (the reference) as this variant", metavar="VARIANT"
    ),
    "snapshots": Flag("--lmgrade-snapshots", "snapshot folder (default: fixtures/<id>/snapshots)"),
    "outcomes": Flag("--lmgrade-outcomes", "append one JSON line per test event to this file (`lmgrade record`)"),
    "oracle": Flag("--lmgrade-oracle", "WRITE_FD,READ_FD of the grading parent's channel (`lmgrade grade`)"),
    "config": Flag("--lmgrade-config", "the test process's view of the rubric, as JSON (`lmgrade grade`)"),
    "staged": Flag("--lmgrade-staged", "the submission folder is already staged (by `lmgrade grade`)", switch=True),
    "live": Flag(
        "--lmgrade-live",
        "ALIAS=MODULE: grade this already-imported module for that alias "
        "(a notebook's live namespace, `lmgrade.check`)",
    ),
    "device": Flag(
        "--lmgrade-device", "device for tests that build models (cpu or cuda)", choices=("cpu", "cuda"), default="cpu"
    ),
}


def dest(name: str) -> str:
    return FLAGS[name].dest


def add_options(group) -> None:
    """Register every flag on a pytest option group."""
    for spec in FLAGS.values():
        kwargs = {"dest": spec.dest, "help": spec.help}
        if spec.switch:
            kwargs.update(action="store_true", default=False)
        else:
            kwargs["default"] = spec.default
            if spec.choices:
                kwargs["choices"] = list(spec.choices)
            if spec.metavar:
                kwargs["metavar"] = spec.metavar
        group.addoption(spec.flag, *spec.aliases, **kwargs)


def child_args(**values) -> list[str]:
    """``child_args(assignment="x", staged=True)`` -> ["--lmgrade-assignment", "x", "--lmgrade-staged"]."""
    out: list[str] = []
    for name, value in values.items():
        spec = FLAGS[name]
        if value is None or value is False:
            continue
        if spec.switch:
            out.append(spec.flag)
        else:
            out += [spec.flag, str(value)]
    return out
