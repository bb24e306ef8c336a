"""Reading the submissions to check: a Gradescope export, a plain folder of folders, or one
submission folder.

A Gradescope "Export Submissions" folder holds ``submission_metadata.yml`` and one folder per
submission id. The YAML is written by Ruby, so its keys look like ``:submitters:`` and
``:name:`` and it may carry ``!ruby/...`` tags; keys are normalised (colons stripped, lower
case) and unknown tags are read as plain mappings, sequences or strings. Each folder holds the
student's files, ``model.pt`` (anywhere inside) and, where given, the YAML config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tools.checkpoints.errors import ExportError

METADATA_NAMES = ("submission_metadata.yml", "submission_metadata.yaml")
CHECKPOINT_NAMES = ("model.pt", "model.safetensors")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
SKIPPED_DIRS = ("__MACOSX", ".git", "__pycache__")


@dataclass(frozen=True)
class Student:
    """One submitter as Gradescope lists them (any field may be empty)."""

    name: str = ""
    email: str = ""
    sid: str = ""


@dataclass(frozen=True)
class Submission:
    """A submission folder and who handed it in."""

    submission_id: str
    folder: Path
    students: tuple[Student, ...] = field(default_factory=tuple)

    def names(self) -> str:
        return "; ".join(s.name for s in self.students if s.name)

    def emails(self) -> str:
        return "; ".join(s.email for s in self.students if s.email)

    def sids(self) -> str:
        return "; ".join(s.sid for s in self.students if s.sid)


def read_submissions(root: Path) -> list[Submission]:
    """Every submission under ``root``, sorted by id (a stable order for ``--shard``)."""
    if not root.is_dir():
        raise ExportError(f"{root}: not a folder")
    metadata = next((root / n for n in METADATA_NAMES if (root / n).is_file()), None)
    if metadata is None and find_checkpoint(root, recursive=False) is not None:
        return [Submission(submission_id=root.name, folder=root)]
    people = read_metadata(metadata) if metadata else {}
    folders = {p.name: p for p in root.iterdir() if p.is_dir() and _visible(p.name)}
    ids = sorted(set(folders) | set(people), key=_natural_key)
    if not ids:
        raise ExportError(f"{root}: no submission folders")
    return [Submission(submission_id=i, folder=folders.get(i, root / i), students=people.get(i, ())) for i in ids]


def read_metadata(path: Path) -> dict[str, tuple[Student, ...]]:
    """``{submission folder name: students}`` from Gradescope's ``submission_metadata.yml``."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8", errors="replace"), Loader=_LenientLoader)
    except yaml.YAMLError as err:
        raise ExportError(f"{path}: not readable YAML ({err})") from err
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a mapping of submission ids")
    return {str(key).strip(): _students(value) for key, value in data.items()}


def _students(entry: Any) -> tuple[Student, ...]:
    entry = _normalise(entry)
    submitters = entry.get("submitters", []) if isinstance(entry, dict) else []
    if isinstance(submitters, dict):
        submitters = [submitters]
    people = []
    for person in submitters if isinstance(submitters, list) else []:
        if isinstance(person, dict):
            people.append(
                Student(
                    name=str(person.get("name") or ""),
                    email=str(person.get("email") or ""),
                    sid=str(person.get("sid") or ""),
                )
            )
    return tuple(people)


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k).strip().strip(":").lower(): _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


class _LenientLoader(yaml.SafeLoader):
    """SafeLoader that reads any unknown tag (``!ruby/object:...``) as plain data."""


def _construct_any(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_LenientLoader.add_multi_constructor("!", _construct_any)
_LenientLoader.add_multi_constructor("tag:", _construct_any)


def find_checkpoint(folder: Path, recursive: bool = True) -> Path | None:
    """``model.pt`` (then ``model.safetensors``) nearest the top of ``folder``; failing that, the
    only checkpoint-like file. None when there is none or the choice is ambiguous."""
    if not folder.is_dir():
        return None
    files = [
        p
        for p in (folder.rglob("*") if recursive else folder.iterdir())
        if p.is_file() and all(_visible(part) for part in p.relative_to(folder).parts)
    ]
    for name in CHECKPOINT_NAMES:
        named = sorted((p for p in files if p.name == name), key=lambda p: (len(p.parts), str(p)))
        if named:
            return named[0]
    others = [p for p in files if p.suffix.lower() in CHECKPOINT_SUFFIXES]
    return others[0] if len(others) == 1 else None


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in SKIPPED_DIRS


def _natural_key(text: str) -> tuple:
    digits = "".join(ch for ch in text if ch.isdigit())
    return (text.rstrip("0123456789"), int(digits) if digits else -1, text)
