"""Rules of the Duke ECE 661 HW3 suite, applied by the grading parent to what a test sends.

Trusted code of the suite: numpy and ``grader.judges`` only (the parent refuses a rule file that
imports torch). Each rule returns the problems it finds, each a sentence the student can act
on; none puts a value the student could not compute from the test's own inputs in a message.

Where the handout accepts more than one answer (an LSTM that packs or only pads, a label tensor
masked or left to the collator, a text returned or printed), a test computes each accepted form
with its own code, sends each under a key checked against the reference's recording (so the
forms are the recorded ones, whatever the test process does), then sends the student's value
under a key judged by ``one_of`` or ``generated_text``: it must match one of those forms.
"""
from __future__ import annotations

import math
import re

import numpy as np

from grader import judges
from grader.judges import Evidence, as_array, rule

LABELS = ("positive", "negative")
EOS_TEXT = "<|endoftext|>"


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    if a.shape != b.shape:
        return False
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.abs(a64 - b64) <= atol + rtol * np.abs(b64)
    return bool((ok & np.isfinite(a64) & np.isfinite(b64)).all())


@rule("one_of")
def one_of(ev: Evidence) -> list[str]:
    """Close (``rtol``/``atol``) to one of the earlier values ``keys``: the accepted forms."""
    keys = list(ev.param("keys"))
    value = as_array(ev.value, f"`{ev.key}`", dtype=np.float64)
    rtol, atol = float(ev.param("rtol", 1e-4)), float(ev.param("atol", 1e-5))
    forms = [as_array(ev.earlier(k), f"`{k}`", dtype=np.float64) for k in keys]
    if any(_close(value, form, rtol, atol) for form in forms):
        return []
    what = ev.param("what", f"`{ev.key}`")
    if not np.isfinite(value).all():
        return [f"{what} has NaN or infinite entries"]
    shapes = {tuple(f.shape) for f in forms}
    if tuple(value.shape) not in shapes:
        want = " or ".join(str(s) for s in sorted(shapes))
        return [f"{what} has shape {tuple(value.shape)}, expected {want}"]
    return [f"{what} matches none of the accepted answers ({ev.param('forms', 'see the handout')})"]


def _with_key(ev: Evidence) -> Evidence:
    """The generic rules name the earlier value `key`, which snapshot.judge's own first argument
    shadows; this suite's tests pass it as `other`."""
    return Evidence(key=ev.key, value=ev.value, params={**ev.params, "key": ev.param("other")},
                    expected=ev.expected, seen=ev.seen, reveal=ev.reveal)


@rule("same_as_earlier")
def same_as_earlier(ev: Evidence) -> list[str]:
    """grader.judges' `same_as`, against the earlier value `other`."""
    return judges.same_as(_with_key(ev))


@rule("differs_from_earlier")
def differs_from_earlier(ev: Evidence) -> list[str]:
    """grader.judges' `differs_from`, against the earlier value `other`."""
    return judges.differs_from(_with_key(ev))


@rule("one_of_values")
def one_of_values(ev: Evidence) -> list[str]:
    """Equal to one of the recorded ``choices`` (plain JSON values)."""
    choices = list(ev.param("choices"))
    if ev.value in choices:
        return []
    what, expected = ev.param("what", f"`{ev.key}`"), ev.param("expected", "see the handout")
    return [f"{what} is {ev.value!r}; {expected}"]


def _squash(text: str) -> str:
    """A text without its end-of-text markers and without any whitespace: decoding options
    (skip_special_tokens, clean_up_tokenization_spaces, a trailing newline) do not matter."""
    return re.sub(r"\s+", "", text.replace(EOS_TEXT, ""))


@rule("generated_text")
def generated_text(ev: Evidence) -> list[str]:
    """``{"returned": str | None, "printed": str, "kind": str}`` from generate_text: the text it
    returned equals one of the earlier accepted texts ``keys`` (whitespace aside), or, when it
    returned none, what it printed ends with one of them."""
    accepted = [_squash(str(ev.earlier(k))) for k in ev.param("keys")]
    accepted = [a for a in accepted if a]
    value = ev.value if isinstance(ev.value, dict) else {}
    returned, printed = value.get("returned"), value.get("printed") or ""
    if isinstance(returned, str):
        if _squash(returned) in accepted:
            return []
        return [f"the text generate_text returned is not {ev.param('what')}"]
    shown = _squash(printed if isinstance(printed, str) else "")
    if shown and any(shown.endswith(a) for a in accepted):
        return []
    if not shown:
        kind = value.get("kind", "None")
        return [(f"generate_text returned {kind} and printed nothing: return (or print) the "
                 "decoded text (tokenizer.decode of the ids model.generate() gives)")]
    return [("generate_text returned no text, and the text it printed does not end with "
             f"{ev.param('what')}")]


@rule("imdb_split")
def imdb_split(ev: Evidence) -> list[str]:
    """load_imdb's six values on an ``n``-review CSV, observed as row numbers of the CSV (-1
    for a value that is not one of its reviews) and label strings. ``aspects``: any of
    "sizes" (7:1:2 within one review), "partition" (each review in exactly one split) and
    "labels" (each y is the label of its x); the shape of the result is always checked."""
    value = ev.value if isinstance(ev.value, dict) else {}
    n = int(ev.param("n"))
    if value.get("parts") != 6:
        return [(f"load_imdb returned {value.get('parts')} values; it must return x_train, "
                 "x_valid, x_test, y_train, y_valid, y_test")]
    names = ("train", "valid", "test")
    rows = [as_array(r, f"x_{s}", dtype=np.int64).reshape(-1) for s, r in zip(names, value["rows"])]
    labels = [[str(v) for v in ys] for ys in value["labels"]]
    problems = []
    for name, xs, ys in zip(names, rows, labels):
        if len(xs) != len(ys):
            problems.append(f"x_{name} has {len(xs)} entries but y_{name} has {len(ys)}")
        if (xs < 0).any():
            problems.append(f"x_{name} holds {int((xs < 0).sum())} values that are not review "
                            "texts of the CSV (x holds the reviews)")
        odd = sorted({y for y in ys if y not in LABELS})
        if odd:
            problems.append(f"y_{name} holds {odd[:3]}; y holds the 'positive'/'negative' labels")
    total = sum(len(xs) for xs in rows)
    if total != n:
        problems.append(f"the three splits hold {total} reviews; the CSV has {n}")
    if problems:
        return problems
    aspects = set(ev.param("aspects"))
    if "sizes" in aspects:
        sizes = [len(xs) for xs in rows]
        want = [0.7 * n, 0.1 * n, 0.2 * n]
        if any(abs(got - w) > 1 for got, w in zip(sizes, want)):
            problems.append(f"{n} reviews were split into train/valid/test sizes {tuple(sizes)}; "
                            "the handout asks for 7:1:2")
    if "partition" in aspects:
        everything = np.concatenate(rows)
        leaked = np.intersect1d(rows[0], rows[2]).size
        if leaked:
            problems.append(f"{leaked} test reviews are also in the training split (test data leaks)")
        if np.intersect1d(rows[0], rows[1]).size or np.intersect1d(rows[1], rows[2]).size:
            problems.append("a review is in two splits")
        if np.unique(everything).size != n:
            problems.append("the splits together must hold every review of the CSV exactly once")
    if "labels" in aspects:
        truth = list(ev.param("truth"))
        for name, xs, ys in zip(names, rows, labels):
            wrong = sum(truth[x] != y for x, y in zip(xs.tolist(), ys))
            if wrong:
                problems.append(f"{wrong} labels of y_{name} do not belong to their review in x_{name}")
    return problems


@rule("wikitext_fraction")
def wikitext_fraction(ev: Evidence) -> list[str]:
    """load_wikitext's splits against the raw lines of each file (``files``: split -> [file
    name, lines]). Accepted: the first ``fraction`` of the non-blank lines, the non-blank lines
    among the first ``fraction`` of all lines (as `split="train[:10%]"` takes them), or a sample
    of as many distinct non-blank lines; blank lines may be kept or dropped, lines stripped or
    not."""
    value = ev.value if isinstance(ev.value, dict) else {}
    fraction = float(ev.param("fraction"))
    problems = []
    for split, (file_name, raw) in ev.param("files").items():
        got = value.get(split)
        if not isinstance(got, list) or not all(isinstance(s, str) for s in got):
            problems.append(f"load_wikitext must return the '{split}' split as a list of lines")
            continue
        got = [s.strip() for s in got if s.strip()]
        text = [line.strip() for line in raw if line.strip()]
        counts = {round(fraction * len(text)), math.floor(fraction * len(text))}
        firsts = [text[:k] for k in counts]
        for k in {round(fraction * len(raw)), math.floor(fraction * len(raw))}:
            firsts.append([line.strip() for line in raw[:k] if line.strip()])
        if got in firsts:
            continue
        if len(got) in counts and len(set(got)) == len(got) and set(got) <= set(text):
            continue  # a sample of the same size: also a tenth of the data
        k = round(fraction * len(text))
        problems.append(
            f"'{split}' holds {len(got)} non-blank lines; a fraction of {fraction:g} of {file_name} "
            f"is its first {k} non-blank lines (or the non-blank lines among its first "
            f"{round(fraction * len(raw))} lines), unchanged")
    return problems


@rule("lm_labels")
def lm_labels(ev: Evidence) -> list[str]:
    """Labels of a causal LM dataset against the earlier ``ids`` and ``mask``: equal to input_ids
    at every real token (an end-of-text token of the text included), and -100 or the pad id at
    padding (the course's DataCollatorForLanguageModeling masks the pad id itself)."""
    labels = as_array(ev.value, f"`{ev.key}`", dtype=np.int64)
    ids = as_array(ev.earlier(ev.param("ids")), "input_ids", dtype=np.int64)
    mask = as_array(ev.earlier(ev.param("mask")), "attention_mask").astype(bool)
    if labels.shape != ids.shape:
        return [f"labels have shape {tuple(labels.shape)} but input_ids have {tuple(ids.shape)}"]
    problems = []
    wrong = (labels != ids) & mask
    if wrong.any():
        msg = f"labels differ from input_ids at {int(wrong.sum())} real (non-padding) tokens"
        if (wrong & (ids == int(ev.param("pad_id")))).any():
            msg += (": the end-of-text token inside a text is a real token whose label is its id "
                    "(it is also GPT-2's pad id, so mask padding by attention_mask, not by id)")
        problems.append(msg)
    pad_ok = (labels == -100) | (labels == ids)
    if not pad_ok[~mask].all():
        problems.append("at padding positions labels must be -100 (ignored by the loss), or the "
                        "pad id for DataCollatorForLanguageModeling to mask")
    return problems


@rule("per_epoch_losses")
def per_epoch_losses(ev: Evidence) -> list[str]:
    """A Trainer run of ``epochs`` epochs: training and validation losses logged once per epoch
    (``train``/``eval``: [epoch, loss] pairs from ``trainer.state.log_history``), finite, the
    validation loss falling; ``history`` (the notebook's per-epoch table, when it has one)
    agreeing with the log; the model's own loss on the validation rows, measured by the test
    before and after training (``before``/``after``), lower after; and at least half of the
    weights changed (``changed`` of ``tensors``)."""
    value = ev.value if isinstance(ev.value, dict) else {}
    epochs = list(range(1, int(ev.param("epochs")) + 1))
    problems = []
    train = [(round(e), float(loss)) for e, loss in value.get("train", [])]
    evals = [(round(e), float(loss)) for e, loss in value.get("eval", [])]
    if [e for e, _ in train] != epochs:
        problems.append(f"the trainer logged the training loss at epochs {[e for e, _ in train]}; "
                        f"expected once per epoch, {epochs} (logging_strategy='epoch')")
    if [e for e, _ in evals] != epochs:
        problems.append(f"the trainer logged a validation loss at epochs {[e for e, _ in evals]}; "
                        f"expected once per epoch, {epochs} (eval_strategy='epoch')")
    if problems:
        return problems
    losses = [loss for _, loss in train + evals]
    if not all(math.isfinite(x) for x in losses):
        return ["a logged loss is NaN or infinite"]
    if not evals[-1][1] < evals[0][1]:
        problems.append("the validation loss did not fall from the first epoch to the last on "
                        "this small task")
    history = value.get("history")
    if history is not None:
        rows = [(round(r[0]), float(r[1]), float(r[2])) for r in history]
        if [r[0] for r in rows] != epochs:
            problems.append(f"loss_history gave the epochs {[r[0] for r in rows]}; expected {epochs}")
        else:
            for (e, tl, el), (_, t_log), (_, e_log) in zip(rows, train, evals):
                if not (math.isclose(tl, t_log, rel_tol=1e-6) and math.isclose(el, e_log, rel_tol=1e-6)):
                    problems.append(f"loss_history's losses of epoch {e} are not the ones the "
                                    "trainer logged for that epoch")
                    break
    before, after = float(value.get("before", math.nan)), float(value.get("after", math.nan))
    if not (math.isfinite(before) and math.isfinite(after) and after < 0.98 * before):
        problems.append("after training, the model's loss on the validation rows is not lower than "
                        "before: the Trainer must train the model it was given")
    changed, tensors = int(value.get("changed", 0)), int(value.get("tensors", 0))
    if tensors <= 0 or changed < float(ev.param("min_changed", 0.5)) * tensors:
        problems.append(f"full fine-tuning changed {changed} of the model's {tensors} weight tensors; "
                        "it must update the weights")
    return problems
