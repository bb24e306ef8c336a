"""A demo Gradescope export built at run time from the safetensors fixtures, and its check.

``materialise_demo(out)`` writes ``out/export/`` with ``submission_metadata.yml`` (Ruby-style
keys, as Gradescope writes them) and one folder per case below, each holding a ``model.pt``
made with ``torch.save`` now (the repository itself holds no pickles). ``run_demo(out)`` checks
the export on the synthetic test file and verifies every row against its expectation,
including that the malicious checkpoint's payload (it would create ``out/PWNED``) never ran.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from grader import project_root
from tools.checkpoints.export import read_submissions
from tools.checkpoints.results import write_gradescope_scores, write_results
from tools.checkpoints.runner import CheckSettings, run_check
from tools.checkpoints.summary import print_summary

FIXTURES = project_root() / "fixtures" / "checkpoints"
TEST_FILE = FIXTURES / "synthetic_test.npz"
TRAINED, UNDERTRAINED, POST_LN = (
    "gpt_tiny_synthetic_pre_ln",
    "gpt_tiny_synthetic_undertrained",
    "gpt_tiny_synthetic_post_ln",
)


@dataclass(frozen=True)
class Case:
    """One demo submission: who, what is wrong with it, and the row we expect."""

    submission_id: str
    student: str
    what: str
    passed: bool
    error_kind: str = ""
    variant: str = ""


CASES = (
    Case("submission_1001", "Ada Lovelace", "trained GPT-tiny, pre-LN", True, variant="pre_ln"),
    Case("submission_1002", "Blaise Pascal", "same run stopped after 40 steps", False),
    Case("submission_1003", "Charles Babbage", "model.pt truncated in upload", False, "corrupt"),
    Case(
        "submission_1004",
        "Mallory Pickle",
        "pickle whose unpickling writes a file",
        False,
        "unsafe",
    ),
    Case("submission_1005", "Grace Hopper", "feed-forward width 100 instead of 4*32", False, "shape"),
    Case("submission_1006", "Alan Turing", "trained weights, no config.yaml", False, "config"),
    Case("submission_1007", "Emmy Noether", "trained GPT-tiny, post-LN", True, variant="post_ln"),
    Case(
        "submission_1008",
        "Kurt Goedel",
        "nanoGPT-style dict, compiled+DataParallel names, files in subfolders",
        True,
        variant="pre_ln",
    ),
    Case("submission_1009", "Sofia Kovalevskaya", "NaN in a weight", False, "non_finite"),
    Case("submission_1010", "John von Neumann", "config claims 10^9 training steps", False, "budget"),
    Case("submission_1011", "Hedy Lamarr", "forgot model.pt", False, "missing"),
    Case(
        "submission_1012",
        "Claude Shannon",
        "torch.save(model) (a pickled nn.Module)",
        False,
        "unsafe",
    ),
)


class _WritesFile:
    """Pickles to a call of ``exec`` that creates ``path``: what a malicious model.pt does."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({str(self.path)!r}, 'w').write('payload ran')",))


def fixture_state(name: str) -> dict[str, torch.Tensor]:
    """A fixture checkpoint's state dict."""
    return load_file(str(FIXTURES / f"{name}.safetensors"))


def fixture_config(name: str) -> dict:
    """A fixture checkpoint's course-style config."""
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())


def materialise_demo(out_dir: Path) -> tuple[Path, Path]:
    """Write the demo export; returns (export folder, marker path the payload would create)."""
    export, marker = out_dir / "export", out_dir / "PWNED"
    if export.exists():
        shutil.rmtree(export)
    marker.unlink(missing_ok=True)
    export.mkdir(parents=True)
    trained, config = fixture_state(TRAINED), fixture_config(TRAINED)
    builders = {
        "submission_1001": lambda d: _save(d, trained, config),
        "submission_1002": lambda d: _save(d, fixture_state(UNDERTRAINED), fixture_config(UNDERTRAINED)),
        "submission_1003": lambda d: _truncated(d, trained, config),
        "submission_1004": lambda d: _save(d, {"model": trained, "extra": _WritesFile(marker)}, config),
        "submission_1005": lambda d: _save(d, _wrong_width(trained), config),
        "submission_1006": lambda d: _save(d, trained, None),
        "submission_1007": lambda d: _save(d, fixture_state(POST_LN), fixture_config(POST_LN)),
        "submission_1008": lambda d: _nanogpt_style(d, trained, config),
        "submission_1009": lambda d: _save(d, _with_nan(trained), config),
        "submission_1010": lambda d: _save(d, trained, {**config, "num_training_steps": 10**9}),
        "submission_1011": lambda d: _write_yaml(d / "config.yaml", config),
        "submission_1012": lambda d: _whole_module(d, config),
    }
    for case in CASES:
        folder = export / case.submission_id
        folder.mkdir()
        builders[case.submission_id](folder)
    _write_metadata(export / "submission_metadata.yml")
    return export, marker


def _save(folder: Path, obj: object, config: dict | None) -> None:
    torch.save(obj, folder / "model.pt")
    if config is not None:
        _write_yaml(folder / "config.yaml", config)


def _write_yaml(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _truncated(folder: Path, state: dict, config: dict) -> None:
    _save(folder, state, config)
    data = (folder / "model.pt").read_bytes()
    (folder / "model.pt").write_bytes(data[: len(data) // 3])


def _wrong_width(state: dict) -> dict:
    bad = dict(state)
    bad["blocks.0.ff.linear_in.weight"] = state["blocks.0.ff.linear_in.weight"][:100].clone()
    bad["blocks.0.ff.linear_in.bias"] = state["blocks.0.ff.linear_in.bias"][:100].clone()
    bad["blocks.0.ff.linear_out.weight"] = state["blocks.0.ff.linear_out.weight"][:, :100].clone()
    return bad


def _with_nan(state: dict) -> dict:
    bad = {k: v.clone() for k, v in state.items()}
    bad["blocks.1.mha.q_attn.weight"][3, 5] = float("nan")
    return bad


def _nanogpt_style(folder: Path, state: dict, config: dict) -> None:
    renamed = {f"module._orig_mod.{k}": v for k, v in state.items()}
    target = folder / "outputs" / "final"
    target.mkdir(parents=True)
    torch.save(
        {
            "model": renamed,
            "iter_num": 2000,
            "best_val_loss": 2.9,
            "model_args": dict(config["model_config"]),
        },
        target / "model.pt",
    )
    _write_yaml(folder / "configs" / "final.yaml", config)


def _whole_module(folder: Path, config: dict) -> None:
    model = torch.nn.Linear(2, 2)  # any nn.Module: torch.save(model) pickles its class
    torch.save(model, folder / "model.pt")
    _write_yaml(folder / "config.yaml", config)


def _write_metadata(path: Path) -> None:
    lines = []
    for i, case in enumerate(CASES):
        user = case.student.lower().replace(" ", ".")
        lines += [
            f"{case.submission_id}:",
            "  :submitters:",
            f"  - :name: {case.student}",
            f"    :sid: '{2023000 + i}'",
            f"    :email: {user}@andrew.cmu.edu",
            "  :created_at: 2023-10-24 13:59:00.000000000 -04:00",
            "  :score: 0.0",
        ]
    path.write_text("\n".join(lines) + "\n")


def verify(rows: list, marker: Path) -> list[str]:
    """Differences between the rows and the cases' expectations (empty when all hold)."""
    problems = []
    by_id = {row.submission_id: row for row in rows}
    for case in CASES:
        row = by_id.get(case.submission_id)
        if row is None:
            problems.append(f"{case.submission_id}: no row")
            continue
        if row.passed != case.passed or row.error_kind != case.error_kind:
            problems.append(
                f"{case.submission_id} ({case.what}): passed={row.passed} "
                f"error_kind={row.error_kind!r}, expected passed={case.passed} "
                f"error_kind={case.error_kind!r}"
            )
        if case.variant and row.variant != case.variant:
            problems.append(f"{case.submission_id}: variant {row.variant}, expected {case.variant}")
    if marker.exists():
        problems.append(f"the malicious payload ran: {marker} exists")
    return problems


def run_demo(out_dir: Path, settings: CheckSettings | None = None) -> int:
    """Build the export, check it, write results; 0 when every row is as expected."""
    out_dir = out_dir.resolve()
    export, marker = materialise_demo(out_dir)
    settings = settings or CheckSettings(test_tokens=TEST_FILE, device="auto")
    rows, meta = run_check(read_submissions(export), settings)
    write_results(rows, out_dir / "results.csv", meta)
    write_gradescope_scores(rows, out_dir / "gradescope_scores.csv")
    print_summary(rows, settings.threshold)
    problems = verify(rows, marker)
    for problem in problems:
        print(f"UNEXPECTED: {problem}")
    print(
        f"checkpoint demo: {'all rows as expected' if not problems else f'{len(problems)} problem(s)'}"
        f"; payload marker {'absent' if not marker.exists() else 'PRESENT'}; results in {out_dir}"
    )
    return 0 if not problems else 1
