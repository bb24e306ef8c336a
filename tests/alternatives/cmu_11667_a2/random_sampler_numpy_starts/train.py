"""CMU 11-667 Fall 2023, Assignment 2, Question 2.1: training the decoder (train.py).

Usage: python train.py configs/GPT-tiny.yaml
"""

import argparse
import json
import math
import os
import time
from collections import deque
from contextlib import nullcontext
from typing import Callable, Iterator

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import FloatTensor, LongTensor
from tqdm import tqdm

try:  # logging is optional: the tests run without wandb
    import wandb
except ImportError:
    wandb = None

from model import DecoderLM
from utils import determine_device, enable_tf32


def random_batch_sampler(
    tokens: LongTensor, device: str, batch_size: int, seq_len: int
) -> Iterator[LongTensor]:
    """An infinite stream of (batch_size x seq_len) batches; every row is a contiguous slice of
    tokens starting at a uniformly random position."""
    # TODO: yield (batch_size x seq_len) batches of contiguous slices at uniformly random starts, forever
    # BEGIN SOLUTION
    n_starts = len(tokens) - seq_len + 1  # every start whose slice fits
    assert n_starts > 0, f"{len(tokens)} tokens cannot fill one row of seq_len={seq_len}"
    while True:
        starts = np.random.randint(0, n_starts, size=batch_size)  # (B,)
        yield torch.stack([tokens[i : i + seq_len] for i in starts]).to(device)  # (B, S)
    # END SOLUTION


def sequential_batch_sampler(
    tokens: LongTensor, device: str, batch_size: int, seq_len: int
) -> Iterator[LongTensor]:
    """One in-order pass over tokens in (batch_size x seq_len) batches; a last batch that
    would be incomplete is dropped."""
    # TODO: yield consecutive (batch_size x seq_len) batches in order; drop an incomplete last batch
    # BEGIN SOLUTION
    n_batches = len(tokens) // (batch_size * seq_len)
    batches = tokens[: n_batches * batch_size * seq_len].view(n_batches, batch_size, seq_len)
    for batch in batches:  # (B, S) each
        yield batch.to(device)
    # END SOLUTION


def cosine_lr_schedule(
    num_warmup_steps: int, num_training_steps: int, min_lr: float, max_lr: float
) -> Callable[[int], float]:
    """Linear warmup from 0 to max_lr over num_warmup_steps, then a half-cosine from max_lr to
    min_lr until num_training_steps, then min_lr."""

    def get_lr(t: int) -> float:
        assert max_lr >= min_lr >= 0.0
        assert num_training_steps >= num_warmup_steps >= 0

        # TODO: the three phases of the schedule
        # BEGIN SOLUTION
        if t < num_warmup_steps:
            return max_lr * t / num_warmup_steps
        if t < num_training_steps:
            # progress runs over the annealing phase only, so t = warmup gives exactly max_lr
            progress = (t - num_warmup_steps) / (num_training_steps - num_warmup_steps)
            return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))
        return min_lr
        # END SOLUTION

    return get_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def compute_language_modeling_loss(input_ids: LongTensor, logits: FloatTensor) -> FloatTensor:
    """Mean next-token cross-entropy: logits at position t (B x S x V) predict input_ids at
    t + 1 (B x S); the mean runs over the B * (S - 1) predictions."""
    # TODO: mean cross-entropy of logits[:, :-1] against input_ids[:, 1:]
    # BEGIN SOLUTION
    V = logits.shape[-1]
    predictions = logits[:, :-1].reshape(-1, V)  # (B * (S - 1), V): the last position has no target
    targets = input_ids[:, 1:].reshape(-1)  # (B * (S - 1),)
    return F.cross_entropy(predictions.float(), targets)
    # END SOLUTION


def train(
    model: DecoderLM,
    batch_sampler: Iterator[LongTensor],
    optimizer: torch.optim.Optimizer,
    lr_schedule: Callable[[int], float],
    autocast=nullcontext(),
    num_training_steps: int = 0,
    grad_accumulation_steps: int = 1,
) -> None:
    """Train for num_training_steps optimizer steps; each step accumulates the gradients of
    grad_accumulation_steps batches."""
    losses = deque(maxlen=20 * grad_accumulation_steps)  # recent losses for the progress bar
    model.train()
    progress = tqdm(range(num_training_steps), desc="training")
    for step in progress:
        tic = time.perf_counter()
        # TODO: look up this step's learning rate and set it
        # BEGIN SOLUTION
        lr = lr_schedule(step)
        set_lr(optimizer, lr)
        # END SOLUTION
        for _ in range(grad_accumulation_steps):
            # TODO: draw a batch, run the model under autocast, compute the loss
            # BEGIN SOLUTION
            input_ids = next(batch_sampler)
            with autocast:
                logits = model(input_ids)
            loss = compute_language_modeling_loss(input_ids, logits)
            # END SOLUTION
            # dividing by the number of micro-batches makes the summed gradients their mean
            (loss / grad_accumulation_steps).backward()
            losses.append(loss.item())

        # TODO: take an optimizer step and clear the gradients
        # BEGIN SOLUTION
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        # END SOLUTION

        mean_loss = sum(losses) / len(losses)
        if wandb is not None and wandb.run is not None:
            wandb.log({"train-loss": mean_loss, "learning-rate": lr}, step=step)
        B, S = input_ids.shape
        flops_per_step = model.flops_per_token * B * S * grad_accumulation_steps
        tflops = flops_per_step / (time.perf_counter() - tic) / 1e12
        progress.set_postfix({"train-loss": f"{mean_loss:.3f}", "lr": f"{lr:.2e}", "TFLOPS": f"{tflops:.2f}"})


@torch.inference_mode()
def evaluate(
    model: DecoderLM, batch_sampler: Iterator[LongTensor], autocast=nullcontext()
) -> dict[str, float]:
    """Mean loss and perplexity over every batch of batch_sampler (equal-size batches)."""
    model.eval()
    losses = []
    for input_ids in tqdm(batch_sampler, desc="evaluating"):
        with autocast:
            logits = model(input_ids)
        losses.append(compute_language_modeling_loss(input_ids, logits).item())
    model.train()

    mean_loss = sum(losses) / len(losses)
    result = {"val-loss": mean_loss, "val-perplexity": math.exp(mean_loss)}
    if wandb is not None and wandb.run is not None:
        wandb.log(result)
    return result


def main():
    enable_tf32()
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=OmegaConf.load, help="a YAML config such as configs/GPT-tiny.yaml")
    args = parser.parse_args()
    config = args.config

    device = determine_device() if config.device == "auto" else config.device
    # bf16 autocast where the GPU supports it, full precision elsewhere
    if device == "cuda" and torch.cuda.is_bf16_supported():
        autocast = torch.autocast(device, dtype=torch.bfloat16)
    else:
        autocast = nullcontext()

    tokenizer = tiktoken.get_encoding(config.tokenizer_encoding)
    model = DecoderLM(tokenizer.n_vocab, **config.model_config).to(device)
    print(f"model parameters: {sum(p.numel() for p in model.parameters()):,}")

    data = np.load("data/tokens.npz")
    train_tokens = torch.from_numpy(data["train"].astype(np.int64))
    val_tokens = torch.from_numpy(data["val"].astype(np.int64))

    flops = (
        model.flops_per_token
        * config.num_training_steps
        * config.grad_accumulation_steps
        * config.batch_size
        * config.seq_len
    )
    print(f"training FLOPs: {flops:.2e}")

    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, betas=(0.9, 0.95), fused=device == "cuda")
    lr_schedule = cosine_lr_schedule(config.num_warmup_steps, config.num_training_steps, config.min_lr, config.max_lr)
    train_sampler = random_batch_sampler(train_tokens, device, config.batch_size, config.seq_len)

    os.makedirs(config.output_dir, exist_ok=True)
    OmegaConf.save(config, os.path.join(config.output_dir, "config.yaml"))
    if wandb is not None:
        wandb.init(project="llms-hw2", config=OmegaConf.to_container(config))

    train(
        model,
        train_sampler,
        optimizer,
        lr_schedule,
        autocast,
        config.num_training_steps,
        config.grad_accumulation_steps,
    )

    val_sampler = sequential_batch_sampler(val_tokens, device, config.batch_size, config.seq_len)
    eval_results = evaluate(model, val_sampler, autocast)
    print(eval_results)
    with open(os.path.join(config.output_dir, "eval.json"), "w") as f:
        json.dump(eval_results, f, indent=2)
    torch.save(model.state_dict(), os.path.join(config.output_dir, "model.pt"))


if __name__ == "__main__":
    main()
