"""Question 3.1 (generate.py): temperature softmax values, and batched generation checked
against a one-prefix-at-a-time greedy decoder written here.

Most tests drive generate() with `toy_lm`, a mask-aware stand-in model (see conftest.py), so
they grade generate.py alone; the last one runs the student's own DecoderLM end to end.
Sampling at temperature > 0 is tested by its distribution over many draws and by
reproducibility under the same seeds, never against the reference's draws.
"""

import random
from collections import Counter

import numpy as np
import torch

PREFIXES = [
    "Here is a yelp review.\nThe soup was cold and the staff ignored us.\nThis review is",
    "Residents of Millbrook said on Monday that",
    "How to plant a small garden. First,",
    "The",
    "On a cold Sunday morning, Grace walked to the museum with a letter in one hand.",
]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.inference_mode()
def greedy_one_at_a_time(model, tokenizer, prefix, max_new_tokens):
    """The oracle: no batching, no padding, argmax at every step."""
    ids = tokenizer.encode(prefix)
    n = len(ids)
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids]), torch.ones(1, len(ids)))[0, -1]
        ids.append(int(logits.argmax()))
    return tokenizer.decode(ids[n:])


def test_softmax_with_temperature_values(sub, snapshot):
    logits = 3 * torch.randn(4, 50)
    softmax_with_temperature = sub.generate.softmax_with_temperature
    for temperature in (0.0, 0.3, 1.0, 2.5):
        probs = softmax_with_temperature(logits, temperature)
        assert tuple(probs.shape) == (4, 50), f"temperature {temperature}: shape {tuple(probs.shape)}, expected (4, 50)"
        sums = probs.sum(dim=-1)
        assert torch.allclose(sums, torch.ones(4), atol=1e-5), (
            f"temperature {temperature}: rows sum to {sums.tolist()}, not 1; divide the logits by the "
            "temperature before the softmax"
        )
        snapshot.check(f"T={temperature}", probs, rtol=1e-4, atol=1e-6)
    one_hot = torch.nn.functional.one_hot(logits.argmax(-1), 50).float()
    assert torch.allclose(softmax_with_temperature(logits, 0.0), one_hot, atol=1e-6), "temperature 0 must give the argmax one-hot"
    assert torch.allclose(softmax_with_temperature(logits, 1.0), logits.softmax(-1), atol=1e-6), (
        "temperature 1 must give the plain softmax"
    )


def test_generate_greedy_matches_one_at_a_time(sub, tokenizer, toy_lm):
    model = toy_lm(seed=1)
    got = sub.generate.generate(model, "cpu", tokenizer, PREFIXES, 2, max_new_tokens=6, temperature=0.0)
    assert isinstance(got, list) and len(got) == len(PREFIXES), (
        f"generate returned {type(got).__name__} of length {len(got) if hasattr(got, '__len__') else '?'}, "
        f"expected a list of {len(PREFIXES)} strings (one continuation per prefix, in order)"
    )
    for i, (prefix, text) in enumerate(zip(PREFIXES, got)):
        assert isinstance(text, str), f"continuation {i} is a {type(text).__name__}, expected a str"
        want = greedy_one_at_a_time(model, tokenizer, prefix, 6)
        assert text == want, (
            f"prefix {i} ({prefix[:30]!r}...) was continued as {text!r}, but greedy decoding of that prefix "
            f"alone gives {want!r}. Return only the new text; left-pad with eot and mask the padding (0.0) "
            "so a prefix continues the same way whatever else is in its batch"
        )


def test_generate_respects_max_new_tokens(sub, tokenizer, toy_lm):
    model = toy_lm(seed=2)
    for max_new_tokens, batch_size in ((1, 5), (4, 3)):
        got = sub.generate.generate(model, "cpu", tokenizer, PREFIXES, batch_size, max_new_tokens, 0.0)
        want = [greedy_one_at_a_time(model, tokenizer, p, max_new_tokens) for p in PREFIXES]
        assert got == want, (
            f"with max_new_tokens={max_new_tokens} and batch_size={batch_size} the continuations are {got}, "
            f"expected {want}: generate exactly max_new_tokens tokens after each prefix"
        )


def test_generate_is_deterministic_at_temperature_zero(sub, tokenizer, toy_lm):
    model = toy_lm(seed=3)
    runs = []
    for seed in (0, 1):
        seed_everything(seed)
        runs.append(sub.generate.generate(model, "cpu", tokenizer, PREFIXES[:3], 3, 5, 0.0))
    assert runs[0] == runs[1], "at temperature 0 two runs with different random seeds gave different continuations"


def fixed_distribution_lm(tokenizer, toy_lm, words, probs):
    logits = torch.full((tokenizer.n_vocab,), -1e4)
    for word, p in zip(words, probs):
        logits[tokenizer.encode_single_token(word)] = float(np.log(p))
    return toy_lm(fixed_logits=logits, n_positions=512)


def word_frequencies(texts, words):
    counts = Counter(w for text in texts for w in text.split())
    total = sum(counts.values())
    assert set(counts) <= {w.strip() for w in words}, f"the continuations contain words the model gives no mass: {set(counts)}"
    return {w: counts[w.strip()] / total for w in words}, total


def test_generate_samples_at_the_temperature(sub, tokenizer, toy_lm):
    words, probs = [" positive", " negative", " good"], [0.6, 0.3, 0.1]
    model = fixed_distribution_lm(tokenizer, toy_lm, words, probs)
    prefixes = ["The food was", "Our waiter was", "This review is", "The room was"]
    for temperature in (1.0, 0.5):
        texts = sub.generate.generate(model, "cpu", tokenizer, prefixes, 2, 150, temperature)
        freq, total = word_frequencies(texts, words)
        assert total == 600, f"expected 600 sampled words (4 prefixes x 150 tokens), got {total}"
        tempered = np.array(probs) ** (1 / temperature)
        tempered /= tempered.sum()
        for word, want in zip(words, tempered):
            # binomial sd over 600 draws is at most 0.02: 0.08 is four sd
            assert abs(freq[word] - want) < 0.08, (
                f"at temperature {temperature}, {word!r} was sampled with frequency {freq[word]:.3f}; expected "
                f"about {want:.3f}: sample from softmax(logits / temperature) (torch.multinomial)"
            )


def test_generate_sampling_is_reproducible(sub, tokenizer, toy_lm):
    words = [" positive", " negative", " good", " bad"]
    model = fixed_distribution_lm(tokenizer, toy_lm, words, [0.25] * 4)
    runs = []
    for seed in (5, 5, 6):
        seed_everything(seed)
        runs.append(sub.generate.generate(model, "cpu", tokenizer, ["A", "B"], 2, 20, 1.0))
    assert runs[0] == runs[1], "sampling with the same seeds (random, numpy, torch) gave different continuations"
    assert runs[0] != runs[2], "sampling at temperature 1 gave the same continuations under different seeds"


def test_generate_with_decoder_lm(sub, snapshot, tokenizer, fill_params):
    """End to end with the student's DecoderLM (fixed weights): greedy continuations must equal
    the one-at-a-time oracle run on the same model, and the reference's continuations."""
    # seed 21: along every greedy path the top two logits differ by >= 0.049 in both LN
    # variants (measured), 30x what a tanh GeLU or TF32 moves them, so no near-tie can flip
    model = fill_params(sub.model.DecoderLM(tokenizer.n_vocab, 32, 4, 64, 2), seed=21).eval()
    got = sub.generate.generate(model, "cpu", tokenizer, PREFIXES, 3, 8, 0.0)
    want = [greedy_one_at_a_time(model, tokenizer, p, 8) for p in PREFIXES]
    assert got == want, f"batched greedy generation {got} differs from generating each prefix alone {want}"
    snapshot.check("continuations", got, hint="greedy continuations of a fixed-weight DecoderLM")
