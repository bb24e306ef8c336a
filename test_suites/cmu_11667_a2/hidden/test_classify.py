"""Question 3.4 (classify.py): score() against scoring each text alone, the uncalibrated
decision rule, and a label-free calibration.

Any calibration that uses only the predicted p(positive) of the inputs and corrects a
constant bias passes (the median threshold, the mean threshold, ...): the tests check that a
strongly biased model gets a balanced split, and that predictions stay monotone in p(positive).
"""

import torch

REVIEWS = [
    "The pizza was excellent and the staff were friendly.",
    "We waited an hour and the soup tasted bad.",
    "Great service.",
    "The tables were dirty and the prices were too high. Our order was wrong twice and nobody said sorry.",
    "A good place for a quiet dinner with friends.",
    "Rude service, small portions and a bland curry.",
    "Best tacos in Riverton, we will come back soon.",
]


def templated(sub):
    return [sub.classify.YELP_TEMPLATE.format(text=r) for r in REVIEWS]


@torch.inference_mode()
def score_one_at_a_time(model, tokenizer, texts):
    return torch.stack([model(torch.tensor([tokenizer.encode(t)]), torch.ones(1, len(tokenizer.encode(t))))[0, -1]
                        for t in texts])


def check_scores(got, want, what):
    assert torch.is_tensor(got), f"score must return a tensor, got {type(got).__name__}"
    assert tuple(got.shape) == tuple(want.shape), (
        f"score returned shape {tuple(got.shape)}, expected (number of texts, vocabulary size) = {tuple(want.shape)}"
    )
    err = (got.float().cpu() - want).abs().max().item()
    assert err < 1e-4, (
        f"{what}: score differs by up to {err:.3g} from scoring each text alone; return the logits at the "
        "last position of each text, with left padding (eot) and a 0.0 attention mask on the padding"
    )


def test_score_matches_one_at_a_time(sub, tokenizer, toy_lm):
    model = toy_lm(seed=4)
    texts = templated(sub)
    got = sub.classify.score(model, "cpu", tokenizer, texts, 3)
    check_scores(got, score_one_at_a_time(model, tokenizer, texts), "stand-in model, batch_size 3")


def test_score_with_decoder_lm(sub, snapshot, tokenizer, fill_params):
    model = fill_params(sub.model.DecoderLM(tokenizer.n_vocab, 32, 4, 64, 2), seed=5).eval()
    texts = templated(sub)
    got = sub.classify.score(model, "cpu", tokenizer, texts, 4)
    check_scores(got, score_one_at_a_time(model, tokenizer, texts), "DecoderLM, batch_size 4")
    # tanh-approximated GeLU moves these logits by up to 1.5e-3 (measured over 20 seeds)
    snapshot.check("scores", got, rtol=1e-3, atol=4e-3)


def test_classify_binary_sentiment_values(sub, snapshot):
    logits = torch.randn(20, 30)
    for i, tokens in enumerate(([3, 7], torch.LongTensor([7, 3]), [0, 29])):
        got = sub.classify.classify_binary_sentiment(logits, tokens)
        assert isinstance(got, list) and all(isinstance(p, int) for p in got), (
            f"classify_binary_sentiment must return a Python list of ints, got {type(got).__name__}"
            + (f" of {type(got[0]).__name__}" if isinstance(got, list) and got else "")
        )
        snapshot.check(f"case{i}", got, hint="1 where p(positive) > 0.5, positive being tokens_of_interest[1]")
        positive_more_likely = (logits[:, tokens[1]] > logits[:, tokens[0]]).long().tolist()
        assert got == positive_more_likely, (
            f"tokens_of_interest={list(map(int, tokens))}: predictions {got} are not 1 exactly where the positive "
            "token (the second) is more likely than the negative one"
        )


def biased_logits(n, bias):
    """Logits whose p(positive) is pushed to one side by a constant bias on the positive token."""
    logits = torch.randn(n, 8)
    logits[:, 1] = logits[:, 0] + torch.randn(n) + bias
    return logits


def test_calibration_balances_a_biased_model(sub):
    classify = sub.classify.classify_binary_sentiment
    for bias in (3.0, -3.0):
        logits = biased_logits(200, bias)
        uncalibrated = classify(logits, [0, 1])
        calibrated = classify(logits, [0, 1], calibrate=True)
        assert isinstance(calibrated, list) and len(calibrated) == 200, "calibrate=True must also return a list of 200 predictions"
        share = sum(uncalibrated) / 200
        positive = sum(int(p) for p in calibrated) / 200
        assert 0.3 <= positive <= 0.7, (
            f"with every text biased {'towards' if bias > 0 else 'against'} the positive label, calibrate=True "
            f"labels {positive:.0%} of them positive (uncalibrated: {share:.0%}); a threshold chosen from the "
            "predicted p(positive) of all inputs should split roughly balanced classes evenly"
        )
        p_positive = logits[:, :2].softmax(1)[:, 1]
        order = p_positive.argsort()
        ranked = [int(calibrated[i]) for i in order]
        assert ranked == sorted(ranked), "calibrated predictions are not monotone in p(positive): use one threshold for all inputs"


def test_uncalibrated_threshold_is_one_half(sub):
    logits = biased_logits(50, 3.0)
    got = sub.classify.classify_binary_sentiment(logits, [0, 1], calibrate=False)
    want = (logits[:, :2].softmax(1)[:, 1] > 0.5).long().tolist()
    assert got == want, "with calibrate=False the threshold must stay 0.5"
