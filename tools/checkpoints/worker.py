"""One worker: a device, a list of submissions, one row each, loading overlapped with scoring.

The worker moves the test tokens to its device once, then evaluates checkpoints one after
another while a background thread (``Prefetcher``) reads, unpickles under ``weights_only``,
validates and builds the next ones. See ``runner`` for the variant rule and the workers.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator

import torch

from tools.checkpoints.config_file import find_config
from tools.checkpoints.errors import CheckpointError, EvaluationError, MissingFileError
from tools.checkpoints.export import Submission, find_checkpoint
from tools.checkpoints.loader import LoadedCheckpoint, LoadLimits, load_checkpoint
from tools.checkpoints.perplexity import (
    PerplexityResult,
    ScoringOptions,
    WindowPlan,
    choose_scorer,
    plan_windows,
    score_stream,
)
from tools.checkpoints.results import CheckRow
from tools.checkpoints.settings import CheckSettings
from tools.checkpoints.token_file import TestTokens
from tools.cmu_11667_a2.flop_budgets import final_budget_problem, study_budget


def worker_rows(
    device_name: str,
    submissions: list[Submission],
    tokens: TestTokens,
    settings: CheckSettings,
    on_row: Callable[[CheckRow], None] | None,
) -> Iterator[CheckRow]:
    device = torch.device(device_name)
    threads_before = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if settings.dtype == "fp32":
        torch.backends.cuda.matmul.allow_tf32 = False  # exact float32 matmuls on the GPU too
        torch.backends.cudnn.allow_tf32 = False
    ids = torch.from_numpy(tokens.ids).to(device)  # once, reused for every checkpoint
    evaluator = Evaluator(ids, settings, device)
    limits = LoadLimits(
        max_bytes=int(settings.max_size_mb * 2**20),
        flop_budget=settings.flop_budget,
        max_token_id=tokens.max_id,
    )
    try:
        for submission, loaded in Prefetcher(submissions, settings.variants, limits, settings.prefetch):
            row = evaluator.row(submission, loaded)
            if on_row is not None:
                on_row(row)
            yield row
    finally:
        torch.set_num_threads(threads_before)


class Prefetcher:
    """Iterates ``(submission, LoadedCheckpoint | CheckpointError)`` while a background thread
    loads up to ``depth`` checkpoints ahead of the consumer."""

    def __init__(
        self,
        submissions: list[Submission],
        variants: tuple[str, ...],
        limits: LoadLimits,
        depth: int = 2,
    ):
        self.submissions = submissions
        self.variants = variants
        self.limits = limits
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="checkpoint-prefetch", daemon=True)

    def __iter__(self) -> Iterator[tuple[Submission, LoadedCheckpoint | CheckpointError]]:
        self.thread.start()
        try:
            for _ in self.submissions:
                yield self.queue.get()
        finally:
            self.stop.set()

    def _produce(self) -> None:
        for submission in self.submissions:
            if self.stop.is_set():
                return
            item = (submission, prepare(submission, self.variants, self.limits))
            while not self.stop.is_set():
                try:
                    self.queue.put(item, timeout=0.5)
                    break
                except queue.Full:
                    continue


def prepare(
    submission: Submission, variants: tuple[str, ...], limits: LoadLimits
) -> LoadedCheckpoint | CheckpointError:
    """Find, read and validate a submission's checkpoint; an error is returned, not raised."""
    start = time.perf_counter()
    try:
        path = find_checkpoint(submission.folder)
        if path is None:
            raise MissingFileError(submission.folder, "no model.pt (or model.safetensors) found")
        loaded = load_checkpoint(path, find_config(submission.folder, near=path), variants, limits)
        return loaded
    except CheckpointError as err:
        err.load_seconds = time.perf_counter() - start
        return err
    # one broken submission must not stop the class: anything else becomes an error row too
    except Exception as err:
        wrapped = CheckpointError(submission.folder, f"internal error while loading: {type(err).__name__}: {err}")
        wrapped.kind = "internal"
        wrapped.load_seconds = time.perf_counter() - start
        return wrapped


class Evaluator:
    """Scores loaded checkpoints on one device against one token stream."""

    def __init__(self, ids: torch.Tensor, settings: CheckSettings, device: torch.device):
        self.ids = ids
        self.settings = settings
        self.device = device
        self.options = ScoringOptions(
            device=device,
            bf16=settings.dtype == "bf16",
            batch_windows=settings.batch_size,
            stride=settings.stride,
            attention=settings.attention,
            chunk_bytes=settings.chunk_bytes,
            fast_path=settings.fast_path,
        )
        self.plans: dict[int, WindowPlan] = {}

    def row(self, submission: Submission, loaded: LoadedCheckpoint | CheckpointError) -> CheckRow:
        row = CheckRow(
            submission_id=submission.submission_id,
            students=submission.names(),
            emails=submission.emails(),
            sids=submission.sids(),
            dtype=self.settings.dtype,
            device=str(self.device),
            score=self.settings.fail_points,
        )
        if isinstance(loaded, CheckpointError):
            return _error_row(row, loaded, getattr(loaded, "load_seconds", 0.0))
        start = time.perf_counter()
        _describe(row, loaded)
        _describe_study(row, submission, loaded)
        try:
            self._score(row, loaded)
        except CheckpointError as err:
            _error_row(row, err, loaded.load_seconds)
        except RuntimeError as err:  # e.g. CUDA out of memory: this checkpoint only
            _error_row(
                row,
                EvaluationError(loaded.path, f"forward pass failed: {err}"),
                loaded.load_seconds,
            )
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        finally:
            loaded.models.clear()
        row.seconds = round(loaded.load_seconds + time.perf_counter() - start, 4)
        self._grade(row, loaded)
        return row

    def _score(self, row: CheckRow, loaded: LoadedCheckpoint) -> None:
        plan = self._plan(loaded.arch.n_positions)
        probes = {}
        for variant, model in loaded.models.items():
            model.to(self.device)
            scorer, probe = choose_scorer(model, self.ids, plan, self.options, loaded.arch.n_vocab)
            probes[variant] = (float(probe.double().mean()), scorer)
        order = sorted(probes, key=lambda v: probes[v][0])
        results: dict[str, PerplexityResult] = {}
        for variant in order:
            results[variant] = score_stream(probes[variant][1], self.ids, plan, self.options)
            if results[variant].perplexity < self.settings.threshold:
                break
        best = min(results, key=lambda v: results[v].mean_nll)
        result = results[best]
        if not math.isfinite(result.nll_sum):
            raise EvaluationError(loaded.path, "the loss is not finite (NaN/inf logits)")
        row.variant, row.scoring_path = best, result.path
        row.perplexity, row.mean_nll, row.tokens_scored = (
            result.perplexity,
            result.mean_nll,
            result.n_scored,
        )
        others = [results[v].perplexity for v in results if v != best]
        row.other_variant_perplexity = others[0] if others else None
        if len(probes) > 1 and not others:
            row.notes = _join(row.notes, "probe mean NLL " + ", ".join(f"{v} {probes[v][0]:.3f}" for v in order))

    def _grade(self, row: CheckRow, loaded: LoadedCheckpoint) -> None:
        if row.error:
            return
        if loaded.budget.status == "unknown":  # fails closed: an unknown budget is not credited
            row.error = final_budget_problem(loaded.config, loaded.budget.limit) or "unknown FLOP budget"
            row.error_kind = "budget"
            return
        if loaded.budget.status == "over":
            row.error = (
                f"training run of {loaded.budget.train_flops:.3g} FLOPs exceeds the "
                f"{loaded.budget.limit:.3g} budget (course formula, {row.config})"
            )
            row.error_kind = "budget"
            return
        row.passed = row.perplexity is not None and row.perplexity < self.settings.threshold
        row.score = self.settings.points if row.passed else self.settings.fail_points

    def _plan(self, context: int) -> WindowPlan:
        # one plan per context length; a stride beyond a model's window means disjoint windows
        if context not in self.plans:
            length = min(context, self.ids.shape[0] - 1)
            stride = None if self.settings.stride is None else min(self.settings.stride, length)
            self.plans[context] = plan_windows(self.ids.shape[0], context, stride, self.device)
        return self.plans[context]


def _describe(row: CheckRow, loaded: LoadedCheckpoint) -> None:
    arch = loaded.arch
    row.n_vocab, row.n_embd, row.n_head = arch.n_vocab, arch.n_embd, arch.n_head
    row.n_positions, row.n_layer, row.n_params = arch.n_positions, arch.n_layer, loaded.n_params
    row.train_flops, row.flop_budget = loaded.budget.train_flops, loaded.budget.status
    row.checkpoint, row.sha256 = str(loaded.path), loaded.sha256
    row.config = str(loaded.config.path) if loaded.config.path else ""
    row.load_seconds = round(loaded.load_seconds, 4)
    row.notes = "; ".join(loaded.notes)


def _describe_study(row: CheckRow, submission: Submission, loaded: LoadedCheckpoint) -> None:
    """Question 2.5's 1e15 budget, from the submission's other YAML files (reported only)."""
    arch = loaded.arch
    model = {"n_embd": arch.n_embd, "n_head": arch.n_head, "n_positions": arch.n_positions, "n_layer": arch.n_layer}
    study = study_budget(submission.folder, loaded.config.path, model, loaded.budget.flops_per_token)
    row.study_budget, row.study_flops = study.status, study.train_flops
    row.study_config = str(study.path) if study.path else ""
    if study.message:
        row.notes = _join(row.notes, study.message)


def _error_row(row: CheckRow, err: CheckpointError, load_seconds: float) -> CheckRow:
    row.error, row.error_kind = err.message, err.kind
    row.checkpoint = row.checkpoint or err.source
    row.passed = False
    row.load_seconds = round(load_seconds, 4)
    row.seconds = row.seconds or row.load_seconds
    return row


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b
