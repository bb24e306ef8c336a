"""The rubric of an assignment: ``test_suites/<id>/assignment.yaml`` loaded and validated.

Everything assignment-specific the engine needs (file names, points, rules, visibility,
timeouts) comes from here, so adding an assignment never changes ``grader/``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from grader import project_root

if TYPE_CHECKING:
    from grader.envs import Environment

VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")


class RubricError(ValueError):
    """An ``assignment.yaml`` that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Rule:
    """A handout rule enforced while the matching tests run (forbidden operations)."""

    name: str
    message: str
    forbid: tuple[str, ...]
    tests: tuple[str, ...]
    # "file.py:Class.method": no Python loop (for, while, comprehension, map) in these, except
    # over the attributes in allow_loops_over (a model's list of layers); read from the source
    no_loops_in: tuple[str, ...] = ()
    allow_loops_over: tuple[str, ...] = ()

    def applies_to(self, test_id: str) -> bool:
        base = test_id.split("[", 1)[0]
        return any(fnmatch.fnmatchcase(test_id, p) or fnmatch.fnmatchcase(base, p) for p in self.tests)


@dataclass(frozen=True)
class TestSpec:
    """One rubric line: a test (base nodeid relative to the suite root) and its points."""

    __test__ = False  # not a pytest test class

    test_id: str
    points: float
    question: str
    question_name: str
    requires: tuple[str, ...] = ()  # tests that must also pass for this one to earn its points


@dataclass(frozen=True)
class Question:
    number: str
    name: str
    points: float
    tests: tuple[TestSpec, ...]


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    root: Path
    modules: dict[str, tuple[str, ...]]
    files_required: tuple[str, ...]
    provided: tuple[str, ...]
    timeout: float
    visibility: str
    variants: tuple[str, ...]  # names of entries of reference/<id>/variants.yaml
    questions: tuple[Question, ...]
    rules: tuple[Rule, ...]
    notebooks: dict[str, str] = field(default_factory=dict)
    child_judged: tuple[str, ...] = ()  # tests whose verdict the parent takes from the test process
    min_mutants: int = 12  # `lmgrade check-suite` wants at least this many mutants
    # the assignment's TA tools, declared (grader imports nothing from tools/ by itself):
    # {"commands": ("tools.x.cli",), "demo": "tools.x.y:run_demo"}
    tools: dict = field(default_factory=dict)
    # environment variables the test process gets, each a path under fixtures/<id>/
    # (`data_env: {NLTK_DATA: nltk_data}`: data real starters load with no network)
    data_env: dict[str, str] = field(default_factory=dict)
    # the course environment (grader.envs); None: the tests run in lmgrade's own interpreter
    environment: Environment | None = None

    # -- paths -------------------------------------------------------------------------
    @property
    def suite_dir(self) -> Path:
        return self.root / "test_suites" / self.id

    @property
    def reference_dir(self) -> Path:
        return self.root / "reference" / self.id

    @property
    def template_dir(self) -> Path:
        return self.root / "student_template" / self.id

    @property
    def fixtures_dir(self) -> Path:
        return self.root / "fixtures" / self.id

    @property
    def snapshots_dir(self) -> Path:
        return self.fixtures_dir / "snapshots"

    @property
    def mutants_file(self) -> Path:
        """Known-buggy submissions as edits of the reference (``grader.mutants``)."""
        return self.root / "tests" / "mutants" / f"{self.id}.yaml"

    @property
    def alternatives_file(self) -> Path:
        return self.root / "tests" / "alternatives" / f"{self.id}.yaml"

    @property
    def variants_file(self) -> Path:
        """Accepted alternative designs as edits of the reference (``grader.mutants``)."""
        return self.reference_dir / "variants.yaml"

    # -- rubric ------------------------------------------------------------------------
    @property
    def total_points(self) -> float:
        return sum(q.points for q in self.questions)

    @property
    def tests(self) -> tuple[TestSpec, ...]:
        return tuple(t for q in self.questions for t in q.tests)

    def spec_for(self, test_id: str) -> TestSpec | None:
        base = test_id.split("[", 1)[0]
        for spec in self.tests:
            if spec.test_id in (test_id, base):
                return spec
        return None

    def rules_for(self, test_id: str) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.applies_to(test_id))

    def visibility_for(self, test_id: str) -> str:
        return "visible" if is_public(test_id) else self.visibility

    def is_child_judged(self, test_id: str) -> bool:
        return test_id.split("[", 1)[0] in self.child_judged


def is_public(test_id: str) -> bool:
    """Public tests (``public/...``) ship to students: their messages may show expected values."""
    return test_id.startswith("public/")


def list_assignments(root: Path | None = None) -> list[str]:
    root = root or project_root()
    suites = root / "test_suites"
    if not suites.is_dir():
        return []
    return sorted(p.parent.name for p in suites.glob("*/assignment.yaml"))


def load_assignment(assignment_id: str, root: Path | None = None, *, check_lock: bool = True) -> Assignment:
    """The rubric of ``assignment_id``; ``check_lock=False`` skips checking the environment's
    lock against its declared ranges (for `lmgrade env lock`, which rewrites it)."""
    root = root or project_root()
    path = root / "test_suites" / assignment_id / "assignment.yaml"
    if not path.is_file():
        known = ", ".join(list_assignments(root)) or "none"
        raise RubricError(f"unknown assignment {assignment_id!r}: no {path} (known: {known})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise RubricError(f"{path}: not valid YAML: {err}") from err
    return _parse(data, path, root, check_lock=check_lock)


def _parse(data: dict, path: Path, root: Path, check_lock: bool = True) -> Assignment:
    def need(key: str, kind: type):
        if key not in data:
            raise RubricError(f"{path}: missing required field {key!r}")
        value = data[key]
        if not isinstance(value, kind):
            raise RubricError(f"{path}: field {key!r} must be a {kind.__name__}")
        return value

    assignment_id = need("id", str)
    if assignment_id != path.parent.name:
        raise RubricError(f"{path}: id {assignment_id!r} differs from its folder {path.parent.name!r}")
    modules = {
        alias: tuple([names] if isinstance(names, str) else names) for alias, names in need("modules", dict).items()
    }
    visibility = data.get("visibility", "after_due_date")
    if visibility not in VISIBILITIES:
        raise RubricError(f"{path}: visibility {visibility!r} is not one of {VISIBILITIES}")
    questions = tuple(_parse_question(q, path) for q in need("questions", list))
    seen: dict[str, str] = {}
    for q in questions:
        for t in q.tests:
            if t.test_id in seen:
                raise RubricError(f"{path}: test {t.test_id} is listed in questions {seen[t.test_id]} and {q.number}")
            seen[t.test_id] = q.number
    for q in questions:
        for t in q.tests:
            missing = [r for r in t.requires if r not in seen]
            if missing:
                raise RubricError(f"{path}: {t.test_id} requires {missing[0]}, which no question lists")
    rules = tuple(_parse_rule(r, path) for r in data.get("rules", []) or [])
    variants = data.get("variants") or []
    if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
        raise RubricError(
            f"{path}: 'variants' must list names of entries of "
            f"reference/{assignment_id}/variants.yaml (got {variants!r})"
        )
    if "requirements" in data:
        raise RubricError(
            f"{path}: 'requirements' was replaced by 'environment' (python and packages with the "
            "semester's version ranges; docs/engine.md)"
        )
    environment = None
    if data.get("environment") is not None:
        from grader.envs import parse_environment

        try:
            environment = parse_environment(
                data["environment"], assignment_id, path.parent, str(path), check_lock=check_lock
            )
        except (ValueError, TypeError) as err:
            raise RubricError(str(err)) from None
    return Assignment(
        id=assignment_id,
        title=str(data.get("title", assignment_id)),
        root=root,
        modules=modules,
        files_required=tuple(data.get("files_required", []) or []),
        provided=tuple(data.get("provided", []) or []),
        timeout=float(data.get("timeout", 60)),
        visibility=visibility,
        variants=tuple(variants),
        questions=questions,
        rules=rules,
        notebooks=dict(data.get("notebooks", {}) or {}),
        child_judged=_child_judged(data, questions, path),
        min_mutants=int(data.get("min_mutants", 12)),
        tools=_parse_tools(data.get("tools"), path),
        data_env=_parse_data_env(data.get("data_env"), path),
        environment=environment,
    )


def _parse_tools(value, path: Path) -> dict:
    """``tools: {commands: [module, ...], demo: module:function}``, both optional."""
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - {"commands", "demo"}:
        raise RubricError(
            f"{path}: 'tools' takes 'commands' (modules adding `lmgrade` verbs) and "
            "'demo' (module:function run by `lmgrade demo`)"
        )
    commands = value.get("commands") or []
    if not isinstance(commands, list) or not all(isinstance(c, str) and c for c in commands):
        raise RubricError(f"{path}: tools.commands must list module names")
    demo = value.get("demo")
    if demo is not None and not (isinstance(demo, str) and demo):
        raise RubricError(f"{path}: tools.demo must be module:function")
    return {"commands": tuple(commands), **({"demo": demo} if demo else {})}


def _child_judged(data: dict, questions, path: Path) -> tuple[str, ...]:
    listed = {t.test_id for q in questions for t in q.tests}
    names = tuple(str(t) for t in (data.get("child_judged") or []))
    unknown = [t for t in names if t not in listed]
    if unknown:
        raise RubricError(f"{path}: child_judged names {unknown[0]}, which no question lists")
    return names


def _parse_data_env(value, path: Path) -> dict[str, str]:
    """``{VAR: relative/path}``: names of environment variables, paths inside fixtures/<id>/."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RubricError(f"{path}: field 'data_env' must map variable names to paths")
    out = {}
    for var, rel in value.items():
        if not (isinstance(var, str) and var.isidentifier() and isinstance(rel, str) and rel):
            raise RubricError(f"{path}: data_env entry {var!r}: {rel!r} must be NAME: relative/path")
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise RubricError(f"{path}: data_env {var}: {rel!r} must stay inside fixtures/<id>/")
        out[var] = rel
    return out


def _parse_question(q: dict, path: Path) -> Question:
    if not isinstance(q, dict) or "number" not in q or "tests" not in q:
        raise RubricError(f"{path}: each question needs 'number' and 'tests' (got {q!r})")
    number, name = str(q["number"]), str(q.get("name", q["number"]))
    tests = tuple(_parse_test(str(tid), entry, number, name, path) for tid, entry in (q["tests"] or {}).items())
    points = float(q.get("points", sum(t.points for t in tests)))
    if abs(points - sum(t.points for t in tests)) > 1e-9:
        raise RubricError(
            f"{path}: question {number} is worth {points} points but its tests add up to {sum(t.points for t in tests)}"
        )
    return Question(number=number, name=name, points=points, tests=tests)


def _parse_test(test_id: str, entry, number: str, name: str, path: Path) -> TestSpec:
    """``test: 2`` or ``test: {points: 5, requires: [other tests of the same function]}``."""
    if isinstance(entry, dict):
        unknown = set(entry) - {"points", "requires"}
        if unknown or "points" not in entry:
            raise RubricError(
                f"{path}: {test_id}: a test entry is a number or {{points, requires}} (got {sorted(entry)})"
            )
        requires = entry.get("requires") or []
        if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
            raise RubricError(f"{path}: {test_id}: requires must be a list of test ids")
        return TestSpec(test_id, float(entry["points"]), number, name, tuple(requires))
    if isinstance(entry, bool) or not isinstance(entry, (int, float)):
        raise RubricError(f"{path}: {test_id}: points must be a number (got {entry!r})")
    return TestSpec(test_id, float(entry), number, name)


def _parse_rule(r: dict, path: Path) -> Rule:
    for key in ("name", "message", "tests"):
        if key not in r:
            raise RubricError(f"{path}: rule {r.get('name', '?')!r} lacks {key!r}")
    if not r.get("forbid") and not r.get("no_loops_in"):
        raise RubricError(f"{path}: rule {r['name']!r} needs 'forbid' (operations) or 'no_loops_in' (functions)")
    for where in r.get("no_loops_in") or []:
        file, _, qualname = str(where).partition(":")
        if not file.endswith(".py") or not qualname:
            raise RubricError(
                f"{path}: rule {r['name']!r}: no_loops_in entries are file.py:Class.method (got {where!r})"
            )
    return Rule(
        name=r["name"],
        message=r["message"],
        forbid=tuple(r.get("forbid") or ()),
        tests=tuple(r["tests"]),
        no_loops_in=tuple(r.get("no_loops_in") or ()),
        allow_loops_over=tuple(r.get("allow_loops_over") or ()),
    )


def child_view(assignment: Assignment) -> dict:
    """What a test process needs of the rubric: no points, no questions, no visibility.

    In secure grading the rubric file is closed to the test process; the parent writes this
    view beside the staged submission instead.
    """
    return {
        "id": assignment.id,
        "title": assignment.title,
        "root": str(assignment.root),
        "modules": {k: list(v) for k, v in assignment.modules.items()},
        "files_required": list(assignment.files_required),
        "provided": list(assignment.provided),
        "timeout": assignment.timeout,
        "notebooks": dict(assignment.notebooks),
        "data_env": dict(assignment.data_env),
        "rules": [
            {"name": r.name, "message": r.message, "forbid": list(r.forbid), "tests": list(r.tests)}
            for r in assignment.rules
            if r.forbid
        ],
    }


def assignment_from_child_view(view: dict) -> Assignment:
    return Assignment(
        id=view["id"],
        title=view["title"],
        root=Path(view["root"]),
        modules={k: tuple(v) for k, v in view["modules"].items()},
        files_required=tuple(view["files_required"]),
        provided=tuple(view["provided"]),
        timeout=float(view["timeout"]),
        visibility="hidden",
        variants=(),
        questions=(),
        rules=tuple(
            Rule(name=r["name"], message=r["message"], forbid=tuple(r["forbid"]), tests=tuple(r["tests"]))
            for r in view["rules"]
        ),
        notebooks=dict(view.get("notebooks", {})),
        data_env=dict(view.get("data_env", {})),
    )
