"""Question 3.1 (generate.py): temperature softmax values, and batched generation checked
against a one-prefix-at-a-time greedy decoder written here.

Most tests drive generate() with `toy_lm`, a mask-aware stand-in model (see conftest.py), so
they grade generate.py alone; the last one runs the student's own DecoderLM end to end. Greedy
continuations are deterministic: the grader compares them with the reference's. Sampling at
temperature > 0 is judged by the grader from the sampled texts (the distribution of the words
over many draws), never against the reference's draws. The asserts only explain a failure.
"""


import numpy as np
import pytest
import torch

from grader.seeding import seed_everything

PREFIXES = [
    "Here is a yelp review.\nThe soup was cold and the staff ignored us.\nThis review is",
    "Residents of Millbrook said on Monday that",
    "How to plant a small garden. First,",
    "The",
    "On a cold Sunday morning, Grace walked to the museum with a letter in one hand.",
]


@torch.inference_mode()
def greedy_one_at_a_time(model, tokenizer, prefix, max_new_tokens):
    """The oracle: no batching, no padding, argmax at every step."""
    ids = tokenizer.encode(prefix)
    n = len(ids)
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids]), torch.ones(1, len(ids)))[0, -1]
        ids.append(int(logits.argmax()))
    return tokenizer.decode(ids[n:])


def continuations(got, n, what="generate"):
    """``got`` if it is a list of n strings; otherwise the test fails saying what came back."""
    if not (isinstance(got, list) and len(got) == n and all(isinstance(t, str) for t in got)):
        kind = "`...` (not implemented yet)" if got is Ellipsis else type(got).__name__
        if isinstance(got, list):
            kinds = ", ".join(sorted({type(t).__name__ for t in got})) or "items"
            kind = f"a list of {len(got)} {kinds}"
        pytest.fail(
            f"{what} returned {kind}, expected a list of {n} strings (one continuation per prefix, "
            "in order)",
            pytrace=False,
        )
    return got


def test_softmax_with_temperature_values(sub, snapshot):
    logits = 3 * torch.randn(4, 50)
    softmax_with_temperature = sub.generate.softmax_with_temperature
    for temperature in (0.0, 0.3, 1.0, 2.5):
        probs = softmax_with_temperature(logits, temperature)
        if not isinstance(probs, torch.Tensor):
            pytest.fail(
                "softmax_with_temperature returned "
                f"{'`...`' if probs is Ellipsis else type(probs).__name__}, "
                "expected a tensor",
                pytrace=False,
            )
        assert tuple(probs.shape) == (4, 50), (
            f"temperature {temperature}: shape {tuple(probs.shape)}, expected (4, 50)"
        )
        sums = probs.sum(dim=-1)
        assert torch.allclose(sums, torch.ones(4), atol=1e-5), (
            f"temperature {temperature}: rows sum to {sums.tolist()}, not 1; divide the logits by "
            "the "
            "temperature before the softmax"
        )
        snapshot.check(
            f"T={temperature}",
            probs,
            rtol=1e-4,
            atol=1e-6,
            hint="softmax(logits / temperature) over the vocabulary; temperature 0 gives the "
            "argmax one-hot",
        )


def test_generate_greedy_matches_one_at_a_time(sub, snapshot, tokenizer, toy_lm):
    model = toy_lm(seed=1)
    got = continuations(
        sub.generate.generate(
            model, "cpu", tokenizer, PREFIXES, 2, max_new_tokens=6, temperature=0.0
        ),
        len(PREFIXES),
    )
    for i, (prefix, text) in enumerate(zip(PREFIXES, got)):
        want = greedy_one_at_a_time(model, tokenizer, prefix, 6)
        assert text == want, (
            f"prefix {i} ({prefix[:30]!r}...) was continued as {text!r}, but greedy decoding of "
            "that prefix "
            f"alone gives {want!r}. Return only the new text; left-pad with eot and mask the "
            "padding (0.0) "
            "so a prefix continues the same way whatever else is in its batch"
        )
    snapshot.check(
        "continuations",
        got,
        hint="return only the new text; left-pad with eot and mask the padding (0.0), so a prefix "
        "continues the same way whatever else is in its batch",
    )


def test_generate_respects_max_new_tokens(sub, snapshot, tokenizer, toy_lm):
    model = toy_lm(seed=2)
    for max_new_tokens, batch_size in ((1, 5), (4, 3)):
        got = continuations(
            sub.generate.generate(
                model, "cpu", tokenizer, PREFIXES, batch_size, max_new_tokens, 0.0
            ),
            len(PREFIXES),
        )
        want = [greedy_one_at_a_time(model, tokenizer, p, max_new_tokens) for p in PREFIXES]
        assert got == want, (
            f"with max_new_tokens={max_new_tokens} and batch_size={batch_size} the continuations "
            f"are {got}, "
            f"expected {want}: generate exactly max_new_tokens tokens after each prefix"
        )
        snapshot.check(
            f"continuations_{max_new_tokens}_tokens_batch_{batch_size}",
            got,
            hint="generate exactly max_new_tokens tokens after each prefix",
        )


def test_generate_is_deterministic_at_temperature_zero(sub, snapshot, tokenizer, toy_lm):
    model = toy_lm(seed=3)
    for seed in (0, 1):
        seed_everything(seed)
        got = continuations(
            sub.generate.generate(model, "cpu", tokenizer, PREFIXES[:3], 3, 5, 0.0), 3
        )
        # both runs are compared with the reference's greedy continuations
        snapshot.check(
            f"continuations_seed_{seed}",
            got,
            hint="at temperature 0 take the argmax: the random seeds must not matter",
        )


def fixed_distribution_lm(tokenizer, toy_lm, words, probs):
    logits = torch.full((tokenizer.n_vocab,), -1e4)
    for word, p in zip(words, probs):
        logits[tokenizer.encode_single_token(word)] = float(np.log(p))
    return toy_lm(fixed_logits=logits, n_positions=512)


def test_generate_samples_at_the_temperature(sub, snapshot, tokenizer, toy_lm):
    words, probs = [" positive", " negative", " good"], [0.6, 0.3, 0.1]
    model = fixed_distribution_lm(tokenizer, toy_lm, words, probs)
    prefixes = ["The food was", "Our waiter was", "This review is", "The room was"]
    for temperature in (1.0, 0.5):
        texts = continuations(
            sub.generate.generate(model, "cpu", tokenizer, prefixes, 2, 150, temperature),
            len(prefixes),
        )
        # binomial sd over 600 draws is at most 0.02: 0.08 is four sd
        snapshot.judge(
            f"texts_T={temperature}",
            texts,
            "word_frequencies",
            words=words,
            probs=probs,
            temperature=temperature,
            total=600,
            tolerance=0.08,
        )


def test_generate_with_decoder_lm(sub, snapshot, tokenizer, fill_params):
    """End to end with the student's DecoderLM (fixed weights): greedy continuations must equal
    the reference's (and, as a diagnostic, the one-at-a-time oracle run on the same model)."""
    # seed 21: along every greedy path the top two logits differ by >= 0.049 in both LN
    # variants (measured), 30x what a tanh GeLU or TF32 moves them, so no near-tie can flip
    with torch.random.fork_rng(devices=[]):
        model = fill_params(sub.model.DecoderLM(tokenizer.n_vocab, 32, 4, 64, 2), seed=21).eval()
    got = continuations(
        sub.generate.generate(model, "cpu", tokenizer, PREFIXES, 3, 8, 0.0), len(PREFIXES)
    )
    snapshot.check("continuations", got, hint="greedy continuations of a fixed-weight DecoderLM")
