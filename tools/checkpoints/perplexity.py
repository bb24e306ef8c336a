"""Exact test perplexity of a reference ``DecoderLM`` over a whole token stream.

Protocol (frozen; the count is a test):

* The stream has N tokens. Every token but the first is scored exactly once, so N - 1 tokens
  are scored; the first has no context (there is no BOS token in the course's data).
* Windows have the model's context ``L = n_positions`` (``min(L, N - 1)`` for short files).
  By default they do not overlap: window k reads ``tokens[kL : kL + L]`` and scores all L next
  tokens ``tokens[kL + 1 : kL + L + 1]``, so the token that starts window k + 1 is the last
  target of window k (one token of carried context; the first target of a window is never
  scored without context). This is lm-eval's ``loglikelihood_rolling`` with disjoint windows.
  The last window ends at the end of the stream and, like lm-eval's, keeps a full window of
  context, scoring only the targets not yet scored.
* ``stride`` s < L gives sliding windows (the Hugging Face "fixed-length models" scheme): the
  first window scores its L targets, every later one moves s tokens and scores only its last s
  targets, so each token is still scored once, now with at least L - s tokens of context.
* perplexity = exp(sum NLL / number scored), natural log, one corpus-level token-weighted mean
  (never a mean of per-window or per-batch means). Log-softmax runs in float32 even under bf16
  autocast; the sum is accumulated in float64.

Speed without changing the numbers:

* The model's ``token_logits`` (tied output layer) is applied in row chunks to the scored
  hidden states only, so a (B, S, V) logits tensor never exists: the chunk stays in cache on
  the CPU and memory stays bounded on the GPU. The chunks call the reference's own method.
* The reference attention may be swapped for ``F.scaled_dot_product_attention``.
* Both swaps are checked for every model on the first window of its first batch against the
  plain forward in float32 (``choose_scorer``): if SDPA differs beyond tolerance it is dropped
  (the chunked head is kept if that alone matches); otherwise the plain forward is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHECK_WINDOWS = 1  # the first window of the first batch: any structural mismatch shows there
PLAIN_LOGITS_BYTES = 256 << 20  # the plain path's (B, S, V) float32 logits stay under this
CHECK_ATOL = 1e-4  # nats per token; fp32 SDPA vs the reference's masked softmax differ ~1e-6
CHECK_RTOL = 1e-5


@dataclass(frozen=True)
class WindowPlan:
    """Window i reads ``tokens[starts[i] : starts[i] + length]`` and scores its last
    ``n_scored[i]`` positions; position p predicts token ``starts[i] + p + 1``."""

    starts: Tensor
    n_scored: Tensor
    length: int
    n_tokens: int

    @property
    def n_windows(self) -> int:
        return int(self.starts.shape[0])

    @property
    def total_scored(self) -> int:
        return int(self.n_scored.sum())


@dataclass(frozen=True)
class PerplexityResult:
    """The corpus-level result: ``perplexity = exp(nll_sum / n_scored)``."""

    nll_sum: float
    n_scored: int
    path: str

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.n_scored

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll) if math.isfinite(self.mean_nll) else math.inf


@dataclass(frozen=True)
class ScoringOptions:
    """How to run the forward pass (none of these change the protocol)."""

    device: torch.device
    bf16: bool = False
    batch_windows: int | None = None
    stride: int | None = None
    attention: str = "auto"  # auto | sdpa | module
    chunk_bytes: int | None = None
    fast_path: bool = True  # False: the model's own full forward for every window


def plan_windows(
    n_tokens: int, context: int, stride: int | None = None, device: torch.device | str = "cpu"
) -> WindowPlan:
    """The windows that score tokens 1..N-1 of an N-token stream exactly once."""
    if n_tokens < 2:
        raise ValueError(f"a stream of {n_tokens} token(s) has nothing to score")
    length = min(context, n_tokens - 1)
    step = length if stride is None else stride
    if not 1 <= step <= length:
        raise ValueError(f"stride {stride} must be in 1..{length} (the window length)")
    last = n_tokens - 1  # index of the last target
    n_windows = 1 + math.ceil((last - length) / step)
    ends = torch.clamp(length + step * torch.arange(n_windows), max=last)  # last target index
    previous = torch.cat([torch.zeros(1, dtype=ends.dtype), ends[:-1]])
    return WindowPlan(
        starts=(ends - length).to(device),
        n_scored=(ends - previous).to(device),
        length=length,
        n_tokens=n_tokens,
    )


def window_batches(
    tokens: Tensor, plan: WindowPlan, batch_windows: int, first: int = 0, stop: int | None = None
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """(inputs (B, L), targets (B, L), scored (B, L) bool) for windows ``first:stop``."""
    stop = plan.n_windows if stop is None else stop
    offsets = torch.arange(plan.length, device=tokens.device)
    for lo in range(first, stop, batch_windows):
        starts = plan.starts[lo : min(lo + batch_windows, stop)]
        index = starts[:, None] + offsets  # (B, L)
        scored = offsets >= (plan.length - plan.n_scored[lo : lo + starts.shape[0], None])
        yield tokens[index], tokens[index + 1], scored


# -- two ways to get per-token NLL from a model -------------------------------------------------


class PlainScorer:
    """The model's own forward: full (B, S, V) logits, then float32 cross-entropy."""

    name = "plain"

    def __init__(self, model: nn.Module, n_vocab: int):
        self.model = model
        self.n_vocab = n_vocab

    def token_nll(self, inputs: Tensor, targets: Tensor, scored: Tensor) -> Tensor:
        logits = self.model(inputs)  # (B, S, V)
        logits = logits[scored].float()  # (K, V), log-softmax in fp32 even under autocast
        with _no_autocast(logits.device):
            return F.cross_entropy(logits, targets[scored], reduction="none")


class FastScorer:
    """The same forward with the output layer applied in row chunks to scored positions only
    (and, optionally, SDPA attention). Patches live on the model instance while active.

    ``tiled`` (the CPU): the output layer is the tied embedding (``token_embeddings.weight``),
    applied tile by tile (``TILE_ROWS`` x ``TILE_COLS`` logits, which stay in a core's L2 cache)
    with a log-sum-exp per tile, so the float32 matmul runs near its peak and each logit is
    read twice from cache instead of four times from memory. ``choose_scorer`` checks it against
    the model's own forward like every other candidate."""

    def __init__(self, model: nn.Module, chunk_rows: int, sdpa: bool, tiled: bool = False):
        self.model = model
        self.chunk_rows = max(1, chunk_rows)
        self.sdpa = sdpa
        self.used_hidden = False
        self.used_sdpa = False
        embedding = getattr(getattr(model, "token_embeddings", None), "weight", None)
        self.weight = embedding if tiled and isinstance(embedding, Tensor) and embedding.dim() == 2 else None
        self._weight_t: Tensor | None = None
        # built once: reading each layer's scale_factor is a device sync on a GPU
        self.attention = {
            mha: _sdpa_self_attention(mha, self)
            for mha in (model.modules() if sdpa else ())
            if _is_course_attention(mha)
        }

    @property
    def name(self) -> str:
        head = ("tiled-head" if self.weight is not None else "chunked-head") if self.used_hidden else "plain-head"
        return "+".join([head] + (["sdpa"] if self.used_sdpa else []))

    def token_nll(self, inputs: Tensor, targets: Tensor, scored: Tensor) -> Tensor:
        with self.patched():
            out = self.model(inputs)  # (B, S, D) hidden states when the patch took effect
        if not self.used_hidden:  # the reference computed logits without token_logits
            logits = out[scored].float()
            with _no_autocast(logits.device):
                return F.cross_entropy(logits, targets[scored], reduction="none")
        hidden, wanted = out[scored], targets[scored]  # (K, D), (K,)
        if self.weight is not None:
            if self._weight_t is None:
                self._weight_t = self.weight.detach().float().t().contiguous()  # (D, V), once per model
            with _no_autocast(hidden.device):
                return tiled_nll(hidden.float(), wanted, self.weight.detach().float(), self._weight_t)
        head = type(self.model).token_logits  # the reference's own output layer
        pieces = []
        for lo in range(0, hidden.shape[0], self.chunk_rows):
            logits = head(self.model, hidden[None, lo : lo + self.chunk_rows])[0].float()  # (c, V)
            with _no_autocast(logits.device):
                pieces.append(F.cross_entropy(logits, wanted[lo : lo + self.chunk_rows], reduction="none"))
        return torch.cat(pieces)

    @contextmanager
    def patched(self) -> Iterator[None]:
        model = self.model

        def hidden_only(x: Tensor) -> Tensor:
            self.used_hidden = True
            return x

        model.token_logits = hidden_only
        for mha, fused in self.attention.items():
            mha.self_attention = fused
        try:
            yield
        finally:
            del model.token_logits
            for mha in self.attention:
                del mha.self_attention


TILE_ROWS = 512  # x TILE_COLS float32 logits = 1 MiB, and as much for the log-softmax: a core's L2 (measured best)
TILE_COLS = 512


def tiled_nll(hidden: Tensor, targets: Tensor, weight: Tensor, weight_t: Tensor) -> Tensor:
    """``-log_softmax(hidden @ weight.T)[targets]`` per row, without the (K, V) logits: each tile's
    log-sum-exp is its first logit minus its first log-softmax value (torch's softmax kernels
    have the fastest vectorised exp on the CPU), and the tiles' are combined per row."""
    rows, n_vocab = hidden.shape[0], weight_t.shape[1]
    starts = range(0, n_vocab, TILE_COLS)
    lse = torch.empty(rows, dtype=torch.float32, device=hidden.device)
    per_tile = torch.empty(min(rows, TILE_ROWS), len(starts), dtype=torch.float32, device=hidden.device)
    for r0 in range(0, rows, TILE_ROWS):
        h = hidden[r0 : r0 + TILE_ROWS]
        for j, c0 in enumerate(starts):
            logits = h @ weight_t[:, c0 : c0 + TILE_COLS]  # (r, c)
            per_tile[: h.shape[0], j] = logits[:, 0] - torch.log_softmax(logits, dim=1)[:, 0]
        lse[r0 : r0 + h.shape[0]] = torch.logsumexp(per_tile[: h.shape[0]], dim=1)
    return lse - (hidden * weight[targets]).sum(dim=1)


def _is_course_attention(module: nn.Module) -> bool:
    return hasattr(module, "self_attention") and isinstance(getattr(module, "scale_factor", None), Tensor)


def _sdpa_self_attention(mha: nn.Module, owner: FastScorer) -> Callable[..., Tensor]:
    original = type(mha).self_attention.__get__(mha)
    scale = float(mha.scale_factor)

    def self_attention(q: Tensor, kT: Tensor, v: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if attention_mask is not None or mha.training:
            return original(q, kT, v, attention_mask)
        owner.used_sdpa = True
        batch, heads, seq, head_dim = q.shape
        out = F.scaled_dot_product_attention(q, kT.transpose(-2, -1), v, is_causal=True, scale=scale)  # (B, H, S, HD)
        return out.transpose(1, 2).reshape(batch, seq, heads * head_dim)  # (B, S, D)

    return self_attention


def _no_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


# -- evaluation -------------------------------------------------------------------------------


def choose_scorer(
    model: nn.Module, tokens: Tensor, plan: WindowPlan, options: ScoringOptions, n_vocab: int
) -> tuple[PlainScorer | FastScorer, Tensor]:
    """The fastest scorer whose float32 NLLs on the first window match the plain forward.

    Returns it and the plain NLLs of those windows (used to rank pre-/post-LN variants)."""
    windows = max(1, min(CHECK_WINDOWS, PLAIN_LOGITS_BYTES // (4 * plan.length * n_vocab)))
    inputs, targets, scored = next(window_batches(tokens, plan, windows))
    plain = PlainScorer(model, n_vocab)
    with torch.inference_mode():
        reference = plain.token_nll(inputs, targets, scored)
    if not options.fast_path:
        return plain, reference
    chunk_rows = _chunk_rows(options, n_vocab)
    sdpa_first = options.attention != "module"
    tiled = options.device.type == "cpu"  # a GPU's matmul needs no help; its memory is bounded by the chunks
    candidates = [FastScorer(model, chunk_rows, sdpa=sdpa_first, tiled=True)] if tiled else []
    candidates.append(FastScorer(model, chunk_rows, sdpa=sdpa_first))
    if options.attention == "auto":
        candidates += [FastScorer(model, chunk_rows, sdpa=False, tiled=True)] if tiled else []
        candidates.append(FastScorer(model, chunk_rows, sdpa=False))
    for candidate in candidates:
        with torch.inference_mode():
            got = candidate.token_nll(inputs, targets, scored)
        if torch.allclose(got, reference, atol=CHECK_ATOL, rtol=CHECK_RTOL):
            return candidate, reference
    return plain, reference


def score_stream(
    scorer: PlainScorer | FastScorer, tokens: Tensor, plan: WindowPlan, options: ScoringOptions
) -> PerplexityResult:
    """Sum the NLL of every scored token of the plan (float64 accumulator on the device)."""
    total = torch.zeros((), dtype=torch.float64, device=tokens.device)
    count = 0
    vocab = scorer.n_vocab if isinstance(scorer, PlainScorer) else None
    batch = options.batch_windows or auto_batch_windows(plan.length, tokens.device, vocab)
    autocast = torch.autocast(device_type=tokens.device.type, dtype=torch.bfloat16) if options.bf16 else nullcontext()
    with torch.inference_mode(), autocast:
        for inputs, targets, scored in window_batches(tokens, plan, batch):
            nll = scorer.token_nll(inputs, targets, scored)
            total += nll.to(torch.float64).sum()
            count += nll.numel()
    if count != plan.total_scored:
        raise RuntimeError(f"scored {count} tokens, the plan has {plan.total_scored}")
    return PerplexityResult(nll_sum=float(total), n_scored=count, path=scorer.name)


def auto_batch_windows(length: int, device: torch.device, plain_vocab: int | None = None) -> int:
    """Windows per forward: ~64K tokens on a GPU, ~8K on the CPU; for the plain path, as many
    as keep the full (B, S, V) float32 logits under ``PLAIN_LOGITS_BYTES`` (x8 on a GPU)."""
    tokens_per_batch = 65536 if device.type == "cuda" else 8192
    if plain_vocab is not None:
        budget = PLAIN_LOGITS_BYTES * (8 if device.type == "cuda" else 1)
        tokens_per_batch = min(tokens_per_batch, budget // (4 * plain_vocab))
    return max(1, tokens_per_batch // length)


def _chunk_rows(options: ScoringOptions, n_vocab: int) -> int:
    # CPU: a few MiB of logits fits the L2/L3 cache (measured ~4x faster than one big tensor);
    # GPU: large chunks keep the matmul efficient while bounding memory
    default = (256 << 20) if options.device.type == "cuda" else (4 << 20)
    budget = options.chunk_bytes or default
    return max(1, budget // (4 * n_vocab))
