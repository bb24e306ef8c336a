"""Rules of the CMU 10-423 HW3 suite, evaluated by the grading parent (numpy only).

Each rule reads the raw observations a test sent and returns the problems found; the tests
pair every rule with values checked against the reference (the test's inputs, outputs that do
not depend on random draws), so a degenerate answer cannot satisfy it.
"""

from __future__ import annotations

import numpy as np

from grader.judges import Evidence, as_array, rule

# the label forms the handout allows after the prompt: numbers as they are, or words "such as
# positive/negative" (handout, Instruction Fine-Tuning Method)
ACCEPTED_LABELS = {0: ("0", "negative", "neg", "bad"), 1: ("1", "positive", "pos", "good")}


def _norm_label(text: str) -> str:
    return text.strip().strip(".!:;,").strip().casefold()


@rule("random_init")
def random_init(ev: Evidence) -> list[str]:
    """A matrix drawn at random around zero (kaiming_uniform_ or a Gaussian, as the handout
    describes both): finite, no zero entries, many distinct values, centred."""
    what = ev.param("what", f"`{ev.key}`")
    arr = as_array(ev.value, what, dtype=np.float64).reshape(-1)
    if arr.size < int(ev.param("min_size", 64)):
        return [f"{what} has {arr.size} entries, fewer than the layer's shape gives"]
    if not np.isfinite(arr).all():
        return [f"{what} has NaN or infinite entries"]
    if (arr == 0).mean() > 0.01:
        return [(f"{what} has {int((arr == 0).sum())} zero entries of {arr.size}: draw every entry at random "
                "(kaiming_uniform_ or a Gaussian)")]
    if np.unique(arr).size < arr.size // 2:
        return [f"{what} repeats its values: draw every entry at random (kaiming_uniform_ or a Gaussian)"]
    std = arr.std()
    if abs(arr.mean()) > 4 * std / np.sqrt(arr.size):
        return [(f"{what} is not centred on zero (mean {arr.mean():.3g}, std {std:.3g}): draw it from a "
                "zero-mean distribution (kaiming_uniform_ or a Gaussian)")]
    return []


@rule("linear_init")
def linear_init(ev: Evidence) -> list[str]:
    """nn.Linear's initialisation: uniform in [-bound, bound] with bound = 1/sqrt(fan_in),
    spread over the interval (not a constant, not zeros)."""
    what = ev.param("what", f"`{ev.key}`")
    arr = as_array(ev.value, what, dtype=np.float64).reshape(-1)
    bound = float(ev.param("bound"))
    if arr.size == 0 or not np.isfinite(arr).all():
        return [f"{what} is empty or has NaN or infinite entries"]
    if np.abs(arr).max() > bound * (1 + 1e-5):
        return [(f"{what} has entries beyond nn.Linear's bound 1/sqrt(in_features) = {bound:.4g}: "
                "re-initialise it as nn.Linear.reset_parameters does")]
    if arr.std() < float(ev.param("min_std", 0.3)) * bound or np.unique(arr).size < arr.size // 2:
        return [(f"{what} is not spread over [-{bound:.4g}, {bound:.4g}] as nn.Linear's uniform "
                "initialisation is: re-initialise it as nn.Linear.reset_parameters does")]
    return []


@rule("dropout_on_lora_input")
def dropout_on_lora_input(ev: Evidence) -> list[str]:
    """Training-mode output of a square LoRALinear with invertible A and B: the LoRA update
    out - (W0 x + b), solved for the branch's input, must be dropout(x) (each entry 0 or
    x / (1 - p)), with a dropped share near p."""
    inputs = ev.earlier(ev.param("inputs"))
    x, w, b = (as_array(inputs[k], f"input {k}", dtype=np.float64) for k in ("x", "W", "b"))
    a, bm = as_array(inputs["A"], "A", dtype=np.float64), as_array(inputs["B"], "B", dtype=np.float64)
    out = as_array(ev.value, f"`{ev.key}`", dtype=np.float64)
    p, scaling = float(ev.param("p")), float(ev.param("scaling"))
    if out.shape != x.shape[:-1] + (w.shape[0],):
        return [f"the layer's output has shape {tuple(out.shape)}, expected {tuple(x.shape[:-1]) + (w.shape[0],)}"]
    if not np.isfinite(out).all():
        return ["the layer's output has NaN or infinite entries"]
    update = out - (x @ w.T + b)  # (n, out) = scaling * d @ A^T @ B^T, d the branch's input
    branch_input = np.linalg.solve(scaling * (bm @ a), update.T).T
    kept_value = x / (1 - p)
    tol = 1e-3 * (1 + np.abs(kept_value))
    dropped = np.abs(branch_input) <= tol
    kept = np.abs(branch_input - kept_value) <= tol
    if not (dropped | kept).all():
        bad = int((~(dropped | kept)).sum())
        return [(f"in training mode the LoRA update must be (alpha / r) B A dropout(x): dropout on the input x of "
                f"the LoRA branch, before A, and nowhere else ({bad} of {x.size} entries of the branch's input are "
                "neither 0 nor x / (1 - p))")]
    share = float(dropped.mean())
    if not abs(share - p) < float(ev.param("share_tol", 0.15)):
        return [(f"in training mode lora_dropout (p = {p:g}) must drop about that share of the LoRA branch's input; "
                f"{share:.0%} of it was dropped")]
    return []


@rule("instruction_texts")
def instruction_texts(ev: Evidence) -> list[str]:
    """Instruction-tuned records: each text is the record's prompt (get_sentiment_prompt of the
    review, which holds the review and an instruction) followed by its label, as a number or a
    word (the handout allows both); one string per label, kept apart; text and label unchanged."""
    records = ev.earlier(ev.param("records"))
    obs = ev.value
    if not isinstance(obs, dict) or not all(isinstance(obs.get(k), list) for k in ("prompts", "texts", "kept")):
        return [f"`{ev.key}`: malformed observations"]
    if not (len(obs["prompts"]) == len(obs["texts"]) == len(obs["kept"]) == len(records)):
        return [f"`{ev.key}`: {len(obs['texts'])} instruction texts for {len(records)} records"]
    by_label: dict[int, set[str]] = {0: set(), 1: set()}
    for rec, prompt, text, kept in zip(records, obs["prompts"], obs["texts"], obs["kept"]):
        review, label = rec["text"], int(rec["label"])
        if not isinstance(prompt, str) or review not in prompt or len(prompt) < len(review) + 10:
            return ["get_sentiment_prompt(text) must return the instruction prompt with the review in it"]
        if not isinstance(text, str):
            return ['_add_instruction_finetuning must set rec["instr_tuned_text"] to a string']
        if not text.startswith(prompt):
            return [('rec["instr_tuned_text"] must start with get_sentiment_prompt(rec["text"]), the prompt '
                    "generate.py shows the model at test time; the label comes after it")]
        suffix = text[len(prompt):]
        if _norm_label(suffix) not in ACCEPTED_LABELS[label]:
            return [(f'the instruction text must end with the record\'s label (label {label}: '
                    f'"{ACCEPTED_LABELS[label][1]}" or {ACCEPTED_LABELS[label][0]}); it ends with {suffix[-40:]!r}')]
        by_label[label].add(suffix.strip())
        if kept is not True:
            return ['keep rec["text"] and rec["label"] as they are; add rec["instr_tuned_text"]']
    if any(len(s) > 1 for s in by_label.values()):
        return ["each label must always be written the same way after the prompt"]
    if by_label[0] and by_label[1] and by_label[0] == by_label[1]:
        return ["the two labels must be written differently"]
    if not (by_label[0] and by_label[1]):
        return [f"`{ev.key}`: the records do not cover both labels"]
    return []


@rule("strings")
def strings(ev: Evidence) -> list[str]:
    """A list of non-empty strings (``count`` of them when given)."""
    value = ev.value
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        return [f"{ev.param('what', f'`{ev.key}`')} must be a list of non-empty strings"]
    count = ev.param("count", None)
    if count is not None and len(value) != int(count):
        return [f"{ev.param('what', f'`{ev.key}`')}: {len(value)} strings, expected {int(count)}"]
    return []


@rule("same_text")
def same_text(ev: Evidence) -> list[str]:
    """The same list of strings as the earlier value ``earlier``."""
    other = ev.earlier(ev.param("earlier"))
    if not isinstance(ev.value, list) or ev.value != other:
        return [ev.param("what", f"`{ev.key}` differs from `{ev.param('earlier')}`")]
    return []


@rule("close_to_earlier")
def close_to_earlier(ev: Evidence) -> list[str]:
    """Equal within ``atol`` (default exact) to the earlier array ``earlier``, which is finite
    (``Snapshot.judge`` takes the value's own name as ``key``, so the generic ``same_as`` rule
    cannot be given its ``key`` parameter from a test)."""
    name = ev.param("earlier")
    a = as_array(ev.value, f"`{ev.key}`", dtype=np.float64)
    b = as_array(ev.earlier(name), f"`{name}`", dtype=np.float64)
    what = ev.param("what", f"`{ev.key}` and `{name}`")
    if a.shape != b.shape:
        return [f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ"]
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return [f"{what}: NaN or infinite entries"]
    bad = int((np.abs(a - b) > float(ev.param("atol", 0.0))).sum())
    if bad:
        return [f"{what} differ at {bad} of {a.size} entries"]
    return []
