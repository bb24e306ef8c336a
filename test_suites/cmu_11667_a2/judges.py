"""Rules of the CMU 11-667 A2 suite that the grading parent applies itself (numpy only).

The test process sends raw observations (the batches a sampler drew, the texts a sampler
generated, the predictions of a calibrated classifier); these rules decide whether they show
the property the handout asks for. Each also checks that the observation is well formed, so a
placeholder (`...`, None, an empty list) never satisfies a property. No message holds a value
recorded from the reference.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from grader.judges import Evidence, as_array, rule


def _tokens(ev: Evidence) -> np.ndarray:
    """The tokens the sampler drew from: ``arange(n_tokens)``, or the earlier value ``key``."""
    if ev.param("n_tokens", None) is not None:
        return np.arange(int(ev.param("n_tokens")))
    tokens = as_array(ev.earlier(ev.param("key")), f"`{ev.param('key')}`").reshape(-1)
    if np.unique(tokens).size != tokens.size:
        raise ValueError("the test's tokens must be distinct (a suite bug)")
    return tokens


def _starts(
    rows: np.ndarray, tokens: np.ndarray, seq_len: int
) -> tuple[np.ndarray | None, str | None]:
    """Start index of every row (n_rows,), or a problem if a row is not a contiguous slice."""
    order = np.argsort(tokens)
    pos = np.searchsorted(tokens[order], rows[:, 0])
    pos = np.clip(pos, 0, tokens.size - 1)
    known = tokens[order][pos] == rows[:, 0]
    if not known.all():
        return None, "a row starts with a value that is not one of the tokens"
    starts = order[pos]
    if (starts > tokens.size - seq_len).any():
        return None, "a row starts too close to the end of the tokens to be a full slice"
    expected = tokens[starts[:, None] + np.arange(seq_len)[None, :]]
    if not np.array_equal(rows, expected):
        return None, "a row of a batch is not a contiguous slice of the tokens"
    return starts, None


@rule("random_slices")
def random_slices(ev: Evidence) -> list[str]:
    """Batches drawn from a random sampler, stacked (n_batches, B, S): every row a contiguous
    slice of the tokens (``n_tokens`` for arange, or the earlier ``key``); optionally every token
    value seen (``every_token``), every start position seen (``every_start``), a chi-square
    against uniform starts below ``max_chi2``, and few batches equal to the one before."""
    tokens = _tokens(ev)
    batch_size, seq_len = int(ev.param("batch_size")), int(ev.param("seq_len"))
    n_batches = int(ev.param("n_batches"))
    batches = as_array(ev.value, f"`{ev.key}`")
    want = (n_batches, batch_size, seq_len)
    if batches.shape != want:
        return [
            (
                f"the sampler's batches, stacked, have shape {tuple(batches.shape)}; expected "
                f"{n_batches} "
                f"batches of shape (batch_size, seq_len) = ({batch_size}, {seq_len})"
            )
        ]
    if batches.dtype.kind not in "iu":
        return [f"the batches hold {batches.dtype} values; they must be the token ids themselves"]
    rows = batches.reshape(-1, seq_len)
    starts, problem = _starts(rows, tokens, seq_len)
    if problem:
        return [problem]
    problems = []
    if ev.param("every_token", False):
        missing = np.setdiff1d(tokens, rows)
        if missing.size:
            problems.append(
                f"with {tokens.size} tokens and seq_len {seq_len}, {n_batches} batches never "
                f"contained {missing.size} of the tokens: every start position whose slice fits "
                f"(0 .. len(tokens) - seq_len) must be possible"
            )
    n_starts = tokens.size - seq_len + 1
    counts = np.bincount(starts, minlength=n_starts).astype(np.float64)
    if ev.param("every_start", False):
        missing = np.flatnonzero(counts == 0)
        if missing.size:
            problems.append(
                f"start positions {missing[:8].tolist()} never occurred in {rows.shape[0]} rows; "
                f"starts 0 .. {n_starts - 1} (len(tokens) - seq_len) must all be possible"
            )
    max_chi2 = ev.param("max_chi2", None)
    if max_chi2 is not None and not problems:
        expected = counts.sum() / n_starts
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        if chi2 >= float(max_chi2):
            problems.append(
                f"start positions are far from uniform (chi-square {chi2:.0f} with {n_starts - 1} "
                "degrees of freedom): draw every start with equal probability"
            )
    if ev.param("distinct_batches", False) and n_batches > 1:
        same = [i for i in range(1, n_batches) if np.array_equal(batches[i], batches[i - 1])]
        if len(same) > n_batches // 10:
            problems.append(
                f"{len(same)} batches are identical to the batch before them: draw new starts "
                "for every batch"
            )
    return problems


@rule("sequential_batches")
def sequential_batches(ev: Evidence) -> list[str]:
    """One pass of a sequential sampler, as the list of its batches: (B, S) batches in order,
    covering the earlier ``key`` tokens from the start; the incomplete last batch is dropped,
    or kept with its complete rows only (``batch_size``, ``seq_len``)."""
    tokens = as_array(ev.earlier(ev.param("key")), f"`{ev.param('key')}`").reshape(-1)
    batch_size, seq_len = int(ev.param("batch_size")), int(ev.param("seq_len"))
    case = f"(len(tokens)={tokens.size}, batch_size={batch_size}, seq_len={seq_len})"
    if not isinstance(ev.value, list):
        return [f"{case}: the sampler did not yield tensors"]
    batches = [as_array(b, f"batch {i}") for i, b in enumerate(ev.value)]
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        if batch.ndim != 2 or batch.shape[1] != seq_len:
            shape = tuple(batch.shape)
            return [f"{case}: batch {i} has shape {shape}, expected ({batch_size}, {seq_len})"]
        if not (batch.shape[0] == batch_size or (last and 0 < batch.shape[0] < batch_size)):
            return [
                (
                    f"{case}: batch {i} has {batch.shape[0]} rows; only the last batch may be "
                    "smaller "
                    f"than {batch_size}"
                )
            ]
    covered = (
        np.concatenate([b.reshape(-1) for b in batches]) if batches else np.zeros(0, tokens.dtype)
    )
    full_batches = tokens.size // (batch_size * seq_len) * batch_size * seq_len
    full_rows = tokens.size // seq_len * seq_len
    if covered.size not in (full_batches, full_rows):
        also = "" if full_rows == full_batches else f" or {full_rows} (keeping its complete rows)"
        return [
            (
                f"{case}: one pass covers {covered.size} tokens, expected {full_batches} "
                "(dropping the "
                f"incomplete last batch){also}"
            )
        ]
    if not np.array_equal(covered, tokens[: covered.size]):
        return [
            (
                f"{case}: the batches, concatenated row by row, are not the tokens in order "
                "(a token is skipped or repeated)"
            )
        ]
    return []


@rule("word_frequencies")
def word_frequencies(ev: Evidence) -> list[str]:
    """Texts sampled from a model whose next-token distribution is fixed: ``total`` words in
    all, only from ``words``, each with a frequency within ``tolerance`` of ``probs`` raised to
    1 / ``temperature`` and renormalised."""
    texts = ev.value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return ["generate did not return a list of strings"]
    words = [w.strip() for w in ev.param("words")]
    counts = Counter(w for text in texts for w in text.split())
    total = sum(counts.values())
    want_total = int(ev.param("total"))
    if total != want_total:
        return [
            (
                f"the continuations hold {total} words; expected {want_total} "
                f"({len(texts)} prefixes x max_new_tokens sampled tokens, one word each)"
            )
        ]
    stray = sorted(set(counts) - set(words))
    if stray:
        return [f"the continuations contain words the model gives no probability: {stray[:5]}"]
    temperature = float(ev.param("temperature"))
    tempered = np.asarray(ev.param("probs"), dtype=np.float64) ** (1 / temperature)
    tempered /= tempered.sum()
    tol = float(ev.param("tolerance"))
    problems = []
    for word, want in zip(words, tempered):
        freq = counts[word] / total
        if abs(freq - want) >= tol:
            problems.append(
                f"at temperature {temperature:g}, {word!r} was sampled with frequency {freq:.3f}, "
                "far from softmax(logits / temperature): sample from the tempered distribution "
                "(torch.multinomial)"
            )
    return problems[:1]


@rule("balanced_threshold")
def balanced_threshold(ev: Evidence) -> list[str]:
    """Calibrated 0/1 predictions for inputs whose p(positive) is the earlier ``key``: a share
    of positives within [``low``, ``high``], and one threshold for all (monotone in p)."""
    p = as_array(ev.earlier(ev.param("key")), f"`{ev.param('key')}`", dtype=np.float64).reshape(-1)
    preds = ev.value
    if not isinstance(preds, list) or len(preds) != p.size:
        return [f"calibrate=True must return a list of {p.size} predictions"]
    arr = as_array(preds, f"`{ev.key}`").reshape(-1)
    if arr.dtype.kind not in "iub" or not np.isin(arr, (0, 1)).all():
        return ["calibrate=True must return predictions that are 0 or 1"]
    share = float(arr.mean())
    low, high = float(ev.param("low")), float(ev.param("high"))
    if not low <= share <= high:
        return [
            (
                f"{ev.param('what', 'calibrate=True')} labels {share:.0%} of the inputs positive; "
                "a threshold "
                "chosen from the predicted p(positive) of all inputs should split roughly "
                "balanced classes "
                "evenly"
            )
        ]
    ranked = arr[np.argsort(p, kind="stable")]
    if (np.diff(ranked.astype(np.int64)) < 0).any():
        return ["calibrated predictions are not monotone in p(positive): use one threshold"]
    return []


@rule("drops_below")
def drops_below(ev: Evidence) -> list[str]:
    """A finite loss at least ``margin`` below the earlier ``key`` loss (itself finite)."""
    after = float(as_array(ev.value, f"`{ev.key}`", dtype=np.float64).reshape(-1)[0])
    before = float(
        as_array(ev.earlier(ev.param("key")), "the loss before", dtype=np.float64).reshape(-1)[0]
    )
    if not (math.isfinite(after) and math.isfinite(before)):
        return [f"{ev.param('what', 'training')} produced a NaN or infinite loss"]
    margin = float(ev.param("margin"))
    if not after < before - margin:
        return [
            (
                f"{ev.param('what', 'training')} took the validation loss from {before:.2f} to "
                f"{after:.2f}; "
                f"expected a drop of more than {margin:g}"
            )
        ]
    return []
