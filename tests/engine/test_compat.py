"""grader.compat: offline NLTK data and downloads, CUDA on a CPU grader, wandb runs.

What compat changes lasts for the whole test process (a torch mode, an import hook, patched
functions), so each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from grader import project_root
from grader.assignment import load_assignment
from grader.compat import CUDA_NOTE_NO_GPU, cuda_requests

ROOT = project_root()


def run_python(code: str, tmp_path: Path, env: dict | None = None) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object as its last line."""
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NLTK_", "WANDB_"))}
    full_env.update({"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), **(env or {})})
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=full_env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- NLTK ----------------------------------------------------------------------------------------

NO_NETWORK = """
import socket
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network use in a test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
"""


def test_rubric_data_env_points_nltk_at_the_shipped_data(tmp_path):
    result = run_python(
        NO_NETWORK
        + """
import json, os, time
from grader import compat
from grader.assignment import load_assignment
compat.prepare(load_assignment("duke_ece661_hw3"))
import nltk
from nltk import download  # bound after the patch
from nltk.corpus import stopwords
started = time.time()
ok = [nltk.download("stopwords"), download("punkt", quiet=True), nltk.download("punkt_tab"),
      nltk.download(["stopwords", "punkt"])]
missing = nltk.download("wordnet")
print(json.dumps({"ok": ok, "missing": missing, "seconds": time.time() - started,
                  "words": len(stopwords.words("english")),
                  "tokens": nltk.word_tokenize("Mr. Smith went to Washington. He left at 3 p.m. "
                                               "and slept."),
                  "attempts": len(attempts), "env": os.environ["NLTK_DATA"]}))
""",
        tmp_path,
    )
    assert result["ok"] == [True, True, True, True]
    assert result["missing"] is False  # not shipped: False, as nltk says on a failed download
    assert result["attempts"] == 0 and result["seconds"] < 30
    assert result["words"] == 179
    # "Mr." and "p.m." stay whole: the punkt model's abbreviations were loaded
    assert result["tokens"] == [
        "Mr.",
        "Smith",
        "went",
        "to",
        "Washington",
        ".",
        "He",
        "left",
        "at",
        "3",
        "p.m.",
        "and",
        "slept",
        ".",
    ]
    assert result["env"].startswith(str(ROOT / "fixtures" / "duke_ece661_hw3" / "nltk_data"))


def test_nltk_download_of_missing_data_can_raise_and_never_prompts(tmp_path):
    result = run_python(
        NO_NETWORK
        + """
import json
from grader import compat
from grader.assignment import load_assignment
compat.prepare(load_assignment("cmu_11667_a2"))  # declares no NLTK data
import nltk
try:
    nltk.download("stopwords", raise_on_error=True)
    raised = None
except ValueError as err:
    raised = str(err)
print(json.dumps({"raised": raised, "shell": nltk.download(), "attempts": len(attempts)}))
""",
        tmp_path,
    )
    assert "no network" in result["raised"]
    assert result["shell"] is False and result["attempts"] == 0


def test_data_env_must_stay_in_the_fixtures(tmp_path):
    from grader.assignment import RubricError, _parse_data_env

    assert _parse_data_env({"NLTK_DATA": "nltk_data"}, tmp_path) == {"NLTK_DATA": "nltk_data"}
    for bad in ({"NLTK_DATA": "../secrets"}, {"NLTK_DATA": "/etc"}, {"1X": "a"}, ["NLTK_DATA"]):
        with pytest.raises(RubricError):
            _parse_data_env(bad, tmp_path)
    assert load_assignment("duke_ece661_hw3").data_env == {"NLTK_DATA": "nltk_data"}


# -- CUDA ----------------------------------------------------------------------------------------


def test_cuda_requests_found_and_guarded_uses_ignored(tmp_path):
    student = tmp_path / "model.py"
    student.write_text(
        textwrap.dedent("""\
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"      # guarded: not a request
        ok = torch.device("cuda" if torch.cuda.device_count() else "cpu")
        def f(x, mode="cuda"):                                        # a default: a request
            if mode == "cuda" or "cuda" in str(x.device):             # comparisons: not
                torch.cuda.synchronize()                              # needs a GPU: a request
            with torch.autocast(device_type="cuda"):                  # runs on a CPU: not
                pass
            return x.cuda()                                           # a request
        choices = dict(choices=["cpu", "cuda"])                       # not
        torch.cuda.manual_seed(0)                                     # fine without a GPU: not
        rank = f"cuda:{0}"                                            # a request
        """),
        encoding="utf-8",
    )
    lines = sorted(n for _, n in cuda_requests({"model.py": student}))
    assert lines == [4, 6, 9, 12]


def test_cuda_requests_the_starter_also_makes_are_not_the_students(tmp_path):
    (tmp_path / "template").mkdir()
    starter = 'def sample(model, device="cuda"):\n    return model\n'
    (tmp_path / "template" / "generate.py").write_text(starter, encoding="utf-8")
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "generate.py").write_text(starter + "x = 1\n", encoding="utf-8")
    assert cuda_requests({"lm/generate.py": tmp_path / "lm" / "generate.py"}, tmp_path / "template") == []
    (tmp_path / "lm" / "generate.py").write_text(starter + "y = torch.zeros(2).cuda()\n")
    assert cuda_requests({"lm/generate.py": tmp_path / "lm" / "generate.py"}, tmp_path / "template") == [
        ("lm/generate.py", 3)
    ]


def test_references_and_templates_ask_for_no_cuda(tmp_path):
    """The shim must cost nothing to a submission that is the reference (or the template)."""
    from grader.assignment import list_assignments
    from grader.submission import stage

    for assignment_id in list_assignments():
        a = load_assignment(assignment_id)
        for source in (a.reference_dir, a.template_dir):
            staged = stage(a, source, tmp_path / assignment_id / source.parent.name)
            assert staged.cuda == [], (assignment_id, source, staged.cuda)


CUDA_CODE = """
import json
from grader import compat
from grader.assignment import load_assignment
notes = []
compat.prepare(load_assignment("mila_ift6135_a2"), cuda=["model.py, line 1"], note=notes.append)
import torch
from torch import nn
checks = {}
checks["factory"] = torch.zeros(2, device="cuda").device.type
checks["factory_device_obj"] = torch.ones(2, device=torch.device("cuda:0")).device.type
checks["to_str"] = torch.ones(2).to("cuda").device.type
checks["to_kw"] = torch.ones(2).to(device="cuda", dtype=torch.float64).dtype == torch.float64
checks["to_index"] = torch.ones(2).to(0).device.type
checks["tensor_cuda"] = torch.ones(2).cuda().device.type
lin = nn.Linear(3, 2, device="cuda").cuda()
lin.to("cuda")
checks["module"] = lin.weight.device.type
checks["module_grad"] = lin.weight.requires_grad and isinstance(lin.weight, nn.Parameter)
checks["type"] = torch.ones(2).type("torch.cuda.DoubleTensor").dtype == torch.float64
torch.cuda.synchronize()
torch.save({"w": torch.ones(1)}, "w.pt")
checks["load"] = torch.load("w.pt", map_location="cuda")["w"].device.type
y = lin(torch.ones(4, 3).cuda()).sum()
y.backward()
checks["backward"] = lin.weight.grad is not None
checks["notes"] = notes
print(json.dumps(checks))
"""


def test_cuda_code_runs_on_the_cpu_with_one_note(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: CUDA is used, not remapped")
    result = run_python(CUDA_CODE, tmp_path)
    notes = result.pop("notes")
    assert notes == [CUDA_NOTE_NO_GPU]
    for key, value in result.items():
        assert value in ("cpu", True), (key, value)


def test_no_cuda_request_no_mode(tmp_path):
    result = run_python(
        """
import json
from grader import compat
from grader.assignment import load_assignment
compat.prepare(load_assignment("mila_ift6135_a2"), cuda=[])
import torch
from torch.overrides import _get_current_function_mode_stack
try:
    torch.zeros(1).cuda()
    failed = None
except (AssertionError, RuntimeError) as err:
    failed = type(err).__name__
print(json.dumps({"modes": len(_get_current_function_mode_stack()), "failed": failed}))
""",
        tmp_path,
    )
    assert result["modes"] == 0
    import torch

    if not torch.cuda.is_available():
        assert result["failed"] is not None  # without the shim, CPU-only torch refuses


# -- wandb ---------------------------------------------------------------------------------------


def test_wandb_imported_inside_a_function_gets_a_run(tmp_path):
    result = run_python(
        """
import json, sys
from grader import compat
from grader.assignment import load_assignment
compat.prepare(load_assignment("cmu_11667_a2"))
def train():
    import wandb                 # a student's lazy import
    wandb.log({"loss": 1.0})
    return wandb.run is not None
print(json.dumps({"before": "wandb" in sys.modules, "run": train()}))
""",
        tmp_path,
        env={"WANDB_MODE": "disabled", "WANDB_SILENT": "true"},
    )
    assert result == {"before": False, "run": True}


def test_wandb_run_started_only_when_the_student_imported_wandb(tmp_path):
    result = run_python(
        """
import json, sys
from grader import compat
compat.before_test()
compat.after_import()
before = "wandb" in sys.modules
import wandb                     # what the student's train.py does
compat.after_import()
wandb.log({"loss": 1.0})         # unconditional, as the real starter does
wandb.finish()                   # a test may end the run...
compat.before_test()             # ...the next one gets a new one
wandb.log({"loss": 0.5})
print(json.dumps({"imported_by_us": before, "run": wandb.run is not None}))
""",
        tmp_path,
        env={"WANDB_MODE": "disabled", "WANDB_SILENT": "true"},
    )
    assert result == {"imported_by_us": False, "run": True}
