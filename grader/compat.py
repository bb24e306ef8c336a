"""Child side: run real students' code as it ran in their course, on a grader that differs.

Students wrote their code for a notebook with a GPU, network access and a logged-in wandb;
the grader has none of these. The plugin calls this module in the test process:

* ``prepare`` once, after staging and before any student code runs (and before the plugin's
  tamper fingerprint is taken, so these patches are part of its baseline):

  - **data_env**: the rubric's ``data_env`` (e.g. ``{NLTK_DATA: nltk_data}``, relative to
    ``fixtures/<id>/``) is put in the environment, so ``stopwords.words("english")`` and
    ``word_tokenize`` find the data shipped with the assignment;
  - **nltk.download offline**: as soon as the student's code imports ``nltk``, its downloader
    is replaced by one that never touches the network: it returns True when the resource is
    already there (``nltk.download("stopwords")``) and False, saying so, when it is not;
  - **CUDA on a CPU grader**: when the student's code asks for CUDA where the course's
    starter does not (``.cuda()``, ``device="cuda"``, ``torch.cuda.synchronize()``, ...; found
    by ``cuda_requests`` at staging) and the tests run on the CPU, a
    ``TorchFunctionMode`` rewrites every CUDA device to the CPU (``.to("cuda")``,
    ``torch.zeros(..., device="cuda")``, ``nn.Module.cuda()``, ``torch.load(map_location=
    "cuda")``), and the CUDA calls that only make sense with a GPU (``synchronize``,
    ``set_device``) do nothing. The first rewrite sends one note. Submissions that never ask
    for CUDA pay nothing.

* ``before_test`` / ``after_import`` (and right after the student's code imports ``wandb``,
  at the top of a module or inside ``train()``): if no wandb run is active, start a disabled
  one, as the courses' own tests did (``wandb.init(mode="disabled")``), so an unconditional
  ``wandb.log`` in ``train()`` works. wandb is never imported here.
"""

from __future__ import annotations

import ast
import importlib.abc
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

__all__ = ["after_import", "before_test", "cuda_requests", "prepare"]

MAX_SCAN_FILES = 200
MAX_SCAN_BYTES = 2_000_000
CUDA_NOTE_NO_GPU = "your code asked for CUDA; this grader has no GPU, so it ran on the CPU"
CUDA_NOTE_CPU_RUN = "your code asked for CUDA; these tests run on the CPU, so it ran there"

_state: dict = {"note": None, "cuda_mode": None}


def prepare(
    assignment, *, cuda: list[str] = (), device: str = "cpu", note: Callable[[str], None] | None = None
) -> None:
    """Set up the test process before any student code runs (see the module docstring).

    ``cuda``: where the student's code asks for CUDA (``StagedSubmission.cuda``); ``note``
    sends a line to the student's output."""
    _state["note"] = note
    _apply_data_env(assignment)
    _after_module_import("nltk", _patch_nltk)
    _after_module_import("wandb", lambda module: _ensure_wandb_run())  # imported in a function too
    if device == "cpu" and cuda:
        _enable_cpu_for_cuda()


def before_test() -> None:
    """Before each test: a student module imported by an earlier test may need its wandb run
    again (a test may have called ``wandb.finish()``)."""
    _ensure_wandb_run()


def after_import() -> None:
    """After the suite imported a student module."""
    _ensure_wandb_run()


# -- data shipped with the assignment ---------------------------------------------------------


def _apply_data_env(assignment) -> None:
    for var, rel in (getattr(assignment, "data_env", None) or {}).items():
        path = str((assignment.fixtures_dir / rel).resolve())
        current = [p for p in os.environ.get(var, "").split(os.pathsep) if p]
        os.environ[var] = os.pathsep.join([path] + [p for p in current if p != path])
        if var == "NLTK_DATA" and "nltk.data" in sys.modules:  # imported before us: too late
            paths = sys.modules["nltk.data"].path
            if path not in paths:
                paths.insert(0, path)


# -- nltk: downloads that never reach the network ---------------------------------------------

NLTK_RESOURCE_DIRS = (
    "corpora",
    "tokenizers",
    "taggers",
    "chunkers",
    "sentiment",
    "stemmers",
    "misc",
    "models",
    "grammars",
    "help",
)
# nltk >= 3.8.2 tokenizes with punkt_tab; a course's `nltk.download("punkt")` meant that model.
NLTK_ALIASES = {"punkt": ("tokenizers/punkt_tab/english/",)}


def _patch_nltk(nltk: ModuleType) -> None:
    downloader = getattr(nltk, "downloader", None)
    cls = getattr(downloader, "Downloader", None)
    if cls is None or getattr(cls.download, "_lmgrade_offline", False):
        return
    cls.download = _offline_download
    default = getattr(downloader, "_downloader", None)
    if default is not None:  # `nltk.download` is the default downloader's bound method
        downloader.download = default.download
        nltk.download = default.download


def _nltk_has(resource: str) -> bool:
    import nltk.data

    names = NLTK_ALIASES.get(resource, ()) + tuple(f"{d}/{resource}" for d in NLTK_RESOURCE_DIRS)
    for name in names:
        try:
            nltk.data.find(name)
            return True
        except (LookupError, OSError, ValueError):
            continue
    return False


def _offline_download(
    self,
    info_or_id=None,
    download_dir=None,
    quiet=False,
    force=False,
    prefix="[nltk_data] ",
    halt_on_error=True,
    raise_on_error=False,
    print_error_to=sys.stderr,
    **_ignored,
):
    """``nltk.download`` without a network: True if every resource asked for is present."""
    ids = info_or_id if isinstance(info_or_id, (list, tuple)) else [info_or_id]
    for item in ids:
        resource = getattr(item, "id", item)
        if isinstance(resource, str) and _nltk_has(resource):
            if not quiet:
                print(f"{prefix}Package {resource} is already up-to-date!", file=print_error_to)
            continue
        what = "the interactive downloader" if resource is None else repr(resource)
        message = (
            f"Error loading {what}: this grader has no network; only the NLTK data "
            "shipped with the assignment is available"
        )
        print(prefix + message, file=print_error_to)
        if raise_on_error:
            raise ValueError(message)
        return False
    return True


_offline_download._lmgrade_offline = True


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a callback right after a top-level module's own code has run, before the code
    that imported it goes on (``from nltk import download`` then gets the patched one)."""

    def __init__(self, name: str, callback: Callable[[ModuleType], None]):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, _AfterImport):
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec
        callback = self.callback

        def exec_then_patch(module):
            exec_module(module)
            callback(module)

        try:
            loader.exec_module = exec_then_patch  # this module's own loader instance
        except (AttributeError, TypeError):
            return spec
        return spec


def _after_module_import(name: str, callback: Callable[[ModuleType], None]) -> None:
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    if not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, callback))


# -- wandb -------------------------------------------------------------------------------------


def _ensure_wandb_run() -> None:
    wandb = sys.modules.get("wandb")  # imported by the code (or preloaded by the warm grader for its course)
    if wandb is None or getattr(wandb, "run", None) is not None:
        return
    init = getattr(wandb, "init", None)
    if not callable(init):
        return
    try:
        init(mode="disabled")
    except Exception:
        return


# -- CUDA on a CPU grader ----------------------------------------------------------------------

_CUDA_WORD = re.compile(r"\bcuda\b")
_CUDA_DEVICE = re.compile(r"^cuda(:\d+)?$")
# torch.cuda functions that fail without a GPU (is_available, manual_seed, empty_cache do not)
CUDA_ONLY_CALLS = frozenset(
    {
        "synchronize",
        "set_device",
        "current_device",
        "get_device_name",
        "get_device_properties",
        "get_device_capability",
        "Stream",
        "Event",
        "stream",
        "device",
        "mem_get_info",
        "set_stream",
        "current_stream",
    }
)


def cuda_requests(files: dict[str, Path], template_dir: Path | None = None) -> list[tuple[str, int]]:
    """(file, line) wherever the student's code puts something on CUDA and the starter does not.

    ``files``: the student's staged files by their staged name. A request is ``.cuda()``, a
    ``torch.cuda`` call that needs a GPU, or the string ``"cuda"`` used as a device; not
    ``"cuda" if torch.cuda.is_available() else "cpu"``, ``device == "cuda"``, ``choices=["cpu",
    "cuda"]`` or ``autocast(device_type="cuda")``, which run on a CPU. A line the template's
    file of the same name also has (a starter's ``device="cuda"`` default, which the tests pass
    a device to) is not the student's request."""
    found = []
    for name, path in list(files.items())[:MAX_SCAN_FILES]:
        lines = _request_lines(path)
        if not lines:
            continue
        starter = _request_lines(template_dir / Path(name).name) if template_dir else {}
        found += [(name, n) for text, n in lines.items() if text not in starter]
    return found


def _request_lines(path: Path) -> dict[str, int]:
    """{stripped source line: its number} for each line of ``path`` that asks for CUDA."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_SCAN_BYTES:
            return {}
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    if not _CUDA_WORD.search(text):
        return {}
    source = text.splitlines()
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # cannot tell: be ready
        return {line.strip(): n for n, line in enumerate(source, 1) if _CUDA_WORD.search(line)}
    out: dict[str, int] = {}
    for lineno in _tree_requests_cuda(tree):
        text_line = source[lineno - 1].strip() if 0 < lineno <= len(source) else ""
        out.setdefault(text_line, lineno)
    return out


def _tree_requests_cuda(tree: ast.AST) -> list[int]:
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if node.func.attr == "cuda" or (
                isinstance(owner, ast.Attribute) and owner.attr == "cuda" and node.func.attr in CUDA_ONLY_CALLS
            ):
                lines.append(node.lineno)
        elif _device_string(node) and not _guarded(node, parents):
            lines.append(node.lineno)
    return sorted(lines)


def _device_string(node: ast.AST) -> bool:
    """ "cuda", "cuda:0" or f"cuda:{rank}"."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and bool(_CUDA_DEVICE.match(node.value))
    return (
        isinstance(node, ast.JoinedStr)
        and bool(node.values)
        and isinstance(node.values[0], ast.Constant)
        and str(node.values[0].value).startswith("cuda:")
    )


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """A "cuda" string that selects or compares a device rather than moving to one."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Compare):
            return True
        if (
            isinstance(parent, ast.IfExp)
            and child is not parent.test
            and re.search(r"is_available|device_count", ast.dump(parent.test))
        ):
            return True
        if isinstance(parent, ast.keyword) and parent.arg in ("choices", "device_type"):
            return True
        if isinstance(parent, (ast.stmt, ast.Call)):
            return False
        child, parent = parent, parents.get(parent)
    return False


def _is_cuda(device) -> bool:
    import torch

    if isinstance(device, str):
        return device == "cuda" or device.startswith("cuda:")
    return isinstance(device, torch.device) and device.type == "cuda"


def _enable_cpu_for_cuda() -> None:
    if _state["cuda_mode"] is not None:
        return
    import torch
    from torch.overrides import TorchFunctionMode

    cpu = torch.device("cpu")
    has_gpu = torch.cuda.is_available()
    tensor_to, tensor_cuda, tensor_type = torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.type
    told = [False]

    def tell() -> None:
        if not told[0]:
            told[0] = True
            note = _state["note"]
            if note is not None:
                note(CUDA_NOTE_CPU_RUN if has_gpu else CUDA_NOTE_NO_GPU)

    class CpuForCuda(TorchFunctionMode):
        """Every CUDA device a torch function is given becomes the CPU."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if kwargs:
                device = kwargs.get("device")
                if device is not None and _is_cuda(device):
                    kwargs = {**kwargs, "device": cpu}
                    tell()
            else:
                kwargs = {}
            if func is tensor_cuda:  # x.cuda(device=None, non_blocking=False, memory_format=...)
                tell()
                rest = {k: v for k, v in kwargs.items() if k in ("non_blocking", "memory_format")}
                return tensor_to(args[0], cpu, **rest)
            if func is tensor_to and len(args) > 1:
                target = args[1]
                if _is_cuda(target) or (isinstance(target, int) and not isinstance(target, bool)):
                    args = (args[0], cpu, *args[2:])
                    tell()
            elif (
                func is tensor_type and len(args) > 1 and isinstance(args[1], str) and args[1].startswith("torch.cuda.")
            ):
                args = (args[0], "torch." + args[1][len("torch.cuda.") :], *args[2:])
                tell()
            return func(*args, **kwargs)

    mode = CpuForCuda()
    mode.__enter__()  # for the whole test process: student code runs in every test
    _state["cuda_mode"] = mode
    _patch_torch_load(torch, tell)
    if not has_gpu:
        _patch_cuda_only_calls(torch, tell)


def _patch_torch_load(torch, tell: Callable[[], None]) -> None:
    original = torch.load

    def load(*args, **kwargs):
        location = kwargs.get("map_location")
        if location is None and len(args) > 1:
            location = args[1]
            if _is_cuda(location):
                args = (args[0], "cpu", *args[2:])
                tell()
        elif location is not None and _is_cuda(location):
            kwargs["map_location"] = "cpu"
            tell()
        return original(*args, **kwargs)

    load.__wrapped__ = original
    load.__doc__ = original.__doc__
    torch.load = load


def _patch_cuda_only_calls(torch, tell: Callable[[], None]) -> None:
    """``torch.cuda.synchronize()`` and friends raise without a GPU; with every tensor on the
    CPU there is nothing to wait for or select. One function object per name: torch._dynamo
    maps torch's functions by identity and refuses one object under two names."""

    def synchronize(*args, **kwargs):
        tell()

    def set_device(*args, **kwargs):
        tell()

    def current_device(*args, **kwargs):
        tell()
        return 0

    torch.cuda.synchronize = synchronize
    torch.cuda.set_device = set_device
    torch.cuda.current_device = current_device
