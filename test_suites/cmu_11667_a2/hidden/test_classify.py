"""Question 3.4 (classify.py): score() against scoring each text alone, the uncalibrated
decision rule, and a label-free calibration.

Scores and uncalibrated predictions are deterministic: the grader compares them with the
reference's. Any calibration that uses only the predicted p(positive) of the inputs and corrects
a constant bias passes (the median threshold, the mean threshold, ...): the grader judges from
the predictions that a strongly biased model gets a balanced split, and that they stay monotone
in p(positive). The asserts only explain a failure.
"""

import pytest
import torch

REVIEWS = [
    "The pizza was excellent and the staff were friendly.",
    "We waited an hour and the soup tasted bad.",
    "Great service.",
    (
        "The tables were dirty and the prices were too high. Our order was wrong twice and nobody "
        "said sorry."
    ),
    "A good place for a quiet dinner with friends.",
    "Rude service, small portions and a bland curry.",
    "Best tacos in Riverton, we will come back soon.",
]


def templated(sub):
    return [sub.classify.YELP_TEMPLATE.format(text=r) for r in REVIEWS]


@torch.inference_mode()
def score_one_at_a_time(model, tokenizer, texts):
    return torch.stack(
        [
            model(torch.tensor([tokenizer.encode(t)]), torch.ones(1, len(tokenizer.encode(t))))[
                0, -1
            ]
            for t in texts
        ]
    )


def check_scores(got, want, what):
    if not torch.is_tensor(got):
        pytest.fail(
            f"score must return a tensor, got {'`...`' if got is Ellipsis else type(got).__name__}",
            pytrace=False,
        )
    assert tuple(got.shape) == tuple(want.shape), (
        f"score returned shape {tuple(got.shape)}, expected (number of texts, vocabulary size) = "
        f"{tuple(want.shape)}"
    )
    err = (got.float().cpu() - want).abs().max().item()
    assert err < 1e-4, (
        f"{what}: score differs by up to {err:.3g} from scoring each text alone; return the "
        "logits at the "
        "last position of each text, with left padding (eot) and a 0.0 attention mask on the "
        "padding"
    )


SCORE_HINT = (
    "the logits at the last position of each text, with left padding (eot) and a 0.0 attention "
    "mask "
    "on the padding"
)


def test_score_matches_one_at_a_time(sub, snapshot, tokenizer, toy_lm):
    model = toy_lm(seed=4)
    texts = templated(sub)
    got = sub.classify.score(model, "cpu", tokenizer, texts, 3)
    check_scores(got, score_one_at_a_time(model, tokenizer, texts), "stand-in model, batch_size 3")
    snapshot.check("scores", got, rtol=1e-4, atol=1e-4, hint=SCORE_HINT)


def test_score_with_decoder_lm(sub, snapshot, tokenizer, fill_params):
    model = fill_params(sub.model.DecoderLM(tokenizer.n_vocab, 32, 4, 64, 2), seed=5).eval()
    texts = templated(sub)
    got = sub.classify.score(model, "cpu", tokenizer, texts, 4)
    check_scores(got, score_one_at_a_time(model, tokenizer, texts), "DecoderLM, batch_size 4")
    # tanh-approximated GeLU moves these logits by up to 1.5e-3 (measured over 20 seeds)
    snapshot.check("scores", got, rtol=1e-3, atol=4e-3, hint=SCORE_HINT)


def predictions(got, n, what):
    if not (isinstance(got, list) and len(got) == n):
        kind = "`...` (not implemented yet)" if got is Ellipsis else type(got).__name__
        pytest.fail(
            f"{what} returned {kind}, expected a Python list of {n} predictions", pytrace=False
        )
    return got


def test_classify_binary_sentiment_values(sub, snapshot):
    logits = torch.randn(20, 30)
    for i, tokens in enumerate(([3, 7], torch.LongTensor([7, 3]), [0, 29])):
        got = predictions(
            sub.classify.classify_binary_sentiment(logits, tokens), 20, "classify_binary_sentiment"
        )
        positive_more_likely = (logits[:, tokens[1]] > logits[:, tokens[0]]).long().tolist()
        assert got == positive_more_likely, (
            f"tokens_of_interest={list(map(int, tokens))}: predictions {got} are not 1 exactly "
            "where the positive "
            "token (the second) is more likely than the negative one"
        )
        snapshot.check(
            f"case{i}", got, hint="1 where p(positive) > 0.5, positive being tokens_of_interest[1]"
        )


def biased_logits(n, bias):
    """Logits whose p(positive) is pushed to one side by a constant bias on the positive token."""
    logits = torch.randn(n, 8)
    logits[:, 1] = logits[:, 0] + torch.randn(n) + bias
    return logits


def test_calibration_balances_a_biased_model(sub, snapshot):
    classify = sub.classify.classify_binary_sentiment
    for bias in (3.0, -3.0):
        side = "positive" if bias > 0 else "negative"
        logits = biased_logits(200, bias)
        snapshot.check(
            f"uncalibrated_{side}_bias",
            predictions(classify(logits, [0, 1]), 200, "classify_binary_sentiment"),
        )
        calibrated = predictions(classify(logits, [0, 1], calibrate=True), 200, "calibrate=True")
        p_positive = logits[:, :2].softmax(1)[:, 1]
        snapshot.check(
            f"p_positive_{side}_bias", p_positive
        )  # the inputs' p(positive), for the judge
        snapshot.judge(
            f"calibrated_{side}_bias",
            calibrated,
            "balanced_threshold",
            key=f"p_positive_{side}_bias",
            low=0.3,
            high=0.7,
            what=f"with every text biased towards the {side} label, calibrate=True",
        )


def test_uncalibrated_threshold_is_one_half(sub, snapshot):
    logits = biased_logits(50, 3.0)
    got = predictions(
        sub.classify.classify_binary_sentiment(logits, [0, 1], calibrate=False),
        50,
        "classify_binary_sentiment",
    )
    snapshot.check("predictions", got, hint="with calibrate=False the threshold must stay 0.5")
