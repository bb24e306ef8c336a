"""Question 2.1 (train.py): the course's five public training tests, seeded and made fast."""

import math
from contextlib import nullcontext

import torch


def test_random_batch_sampler(sub):
    tokens = torch.arange(100_000)
    sampler = sub.train.random_batch_sampler(tokens, "cpu", 32, 256)
    for _ in range(100):
        batch = next(sampler)
        assert tuple(batch.shape) == (32, 256), f"a batch has shape {tuple(batch.shape)}, expected (batch_size, seq_len) = (32, 256)"
        offsets = batch - batch[:, :1]
        assert torch.equal(offsets, torch.arange(256).expand(32, 256)), (
            "a row of the batch is not a contiguous slice of the tokens"
        )

    sampler = sub.train.random_batch_sampler(torch.arange(7), "cpu", 64, 4)
    seen = set()
    for _ in range(100):
        seen.update(next(sampler).flatten().tolist())
    assert seen == set(range(7)), (
        f"with 7 tokens and seq_len 4, 100 batches only ever contained tokens {sorted(seen)}: "
        "every start position whose slice fits (0 .. len(tokens) - seq_len) must be possible"
    )


def test_sequential_batch_sampler(sub):
    tokens = torch.arange(24 * 32 * 256)
    batches = list(sub.train.sequential_batch_sampler(tokens, "cpu", 32, 256))
    assert len(batches) == 24, f"the sampler yielded {len(batches)} batches, expected 24"
    assert torch.equal(torch.cat(batches).flatten(), tokens), (
        "the batches, concatenated, are not the tokens in order"
    )

    extra = torch.arange(24 * 32 * 256 + 7)
    batches = list(sub.train.sequential_batch_sampler(extra, "cpu", 32, 256))
    assert torch.equal(torch.cat(batches).flatten(), tokens), (
        "with 7 tokens too many for a full row, the remainder must be dropped"
    )


def test_cosine_lr_schedule(sub):
    get_lr = sub.train.cosine_lr_schedule(5, 10, 0.01, 0.1)
    expected = [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.091405, 0.068905, 0.041094, 0.018594] + [0.01] * 5
    got = [get_lr(t) for t in range(15)]
    for t, (lr, want) in enumerate(zip(got, expected)):
        assert math.isclose(lr, want, rel_tol=1e-3, abs_tol=1e-9), (
            f"get_lr({t}) = {lr}, expected {want} (warmup 5, total 10, min 0.01, max 0.1); "
            f"the schedule was {[round(float(x), 6) for x in got]}"
        )


def test_compute_language_modeling_loss(sub):
    input_ids = torch.tensor([[0, 1, 2], [2, 1, 0]])
    logits = torch.tensor([1.0, -2.0, 3.0]).repeat(2, 3, 1)  # (B=2, S=3, V=3)
    loss = sub.train.compute_language_modeling_loss(input_ids, logits)
    assert torch.is_tensor(loss), f"the loss must be a tensor (to call backward on it), got {type(loss).__name__}"
    assert math.isclose(loss.item(), 3.1328, rel_tol=1e-3), f"loss = {loss.item():.4f}, expected 3.1328"


def test_train(sub):
    """The course fits 300 steps at lr 1e-4..5e-4; 80 steps at 1e-3..5e-3 reach the same
    threshold with a wide margin (val-loss 0.33-0.48 over seeds, measured) in a quarter of the time."""
    model = sub.model.DecoderLM(8, 16, 8, 16, 2)
    tokens = torch.arange(8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    train = sub.train
    train.train(
        model,
        train.random_batch_sampler(tokens, "cpu", 4, 4),
        optimizer,
        train.cosine_lr_schedule(5, 80, 1e-3, 5e-3),
        nullcontext(),
        80,
        2,
    )
    loss = train.evaluate(model, train.sequential_batch_sampler(tokens, "cpu", 2, 4))["val-loss"]
    assert loss <= 1.3, f"after 80 steps the validation loss is {loss:.3f}, expected <= 1.3"
