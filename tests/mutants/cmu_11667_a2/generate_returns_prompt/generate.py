"""CMU 11-667 Fall 2023, Assignment 2, Question 3.1: text generation (generate.py).

Usage: python generate.py --config outputs/GPT-tiny/config.yaml --prefixes data/prefixes.jsonl
"""

import argparse
import json
import os

import tiktoken
import torch
from omegaconf import OmegaConf
from torch import FloatTensor

from model import DecoderLM
from utils import determine_device, enable_tf32


def softmax_with_temperature(logits: FloatTensor, temperature: float) -> FloatTensor:
    """Next-token probabilities (B x V) from logits (B x V) at the given temperature;
    temperature 0 puts all the mass on the argmax."""
    # a temperature of exactly 0 would divide by zero: use a tiny one instead
    temperature = max(temperature, 1e-5)
    # TODO: divide by the temperature, then softmax over the vocabulary
    # BEGIN SOLUTION
    return torch.softmax(logits / temperature, dim=-1)
    # END SOLUTION


@torch.inference_mode()
def generate(
    model: DecoderLM,
    device: str,
    tokenizer: tiktoken.Encoding,
    prefixes: list[str],
    batch_size: int,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
) -> list[str]:
    """Continue every prefix by max_new_tokens sampled tokens and return the continuations
    (without the prefixes), in the order of prefixes.

    Prefixes are processed batch_size at a time, left-padded with the end-of-text token to a
    common length, with an attention mask of 0.0 on the padding and 1.0 on real tokens. The
    longest prefix plus max_new_tokens must fit in the model's n_positions.
    """
    # TODO: batched generation with left padding (eot) and an attention mask
    # BEGIN SOLUTION
    generations = []
    for i in range(0, len(prefixes), batch_size):
        encoded = [tokenizer.encode(prefix) for prefix in prefixes[i : i + batch_size]]
        prefix_len = max(len(ids) for ids in encoded)
        # left padding keeps the last real token of every row at position -1
        input_ids = torch.tensor(
            [[tokenizer.eot_token] * (prefix_len - len(ids)) + ids for ids in encoded], device=device
        )  # (b, prefix_len)
        attention_mask = torch.tensor(
            [[0.0] * (prefix_len - len(ids)) + [1.0] * len(ids) for ids in encoded], device=device
        )  # (b, prefix_len)

        for _ in range(max_new_tokens):
            logits = model(input_ids, attention_mask)[:, -1]  # (b, V): the next-token logits
            if temperature == 0.0:
                next_ids = logits.argmax(dim=-1, keepdim=True)  # (b, 1): greedy, no randomness used
            else:
                probs = softmax_with_temperature(logits, temperature)  # (b, V)
                next_ids = torch.multinomial(probs, num_samples=1)  # (b, 1)
            input_ids = torch.cat([input_ids, next_ids], dim=1)  # (b, S + 1)
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)

        generations += [tokenizer.decode(row[len(row) - len(ids) - max_new_tokens:].tolist()) for row, ids in zip(input_ids, encoded)]
    return generations
    # END SOLUTION


def main():
    enable_tf32()
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=OmegaConf.load, required=True, help="the config.yaml written by train.py")
    parser.add_argument("--prefixes", type=str, required=True, help="a JSON-lines file of {\"prefix\": ...}")
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args()
    config = args.config

    device = determine_device() if config.device == "auto" else config.device
    tokenizer = tiktoken.get_encoding(config.tokenizer_encoding)
    model = DecoderLM(tokenizer.n_vocab, **config.model_config).to(device)
    state_dict = torch.load(os.path.join(config.output_dir, "model.pt"), map_location=device, weights_only=True)
    model.load_state_dict(state_dict)
    model.eval()

    with open(args.prefixes) as f:
        prefixes = [json.loads(line)["prefix"] for line in f if line.strip()]

    generations = generate(
        model, device, tokenizer, prefixes, config.batch_size, args.max_new_tokens, args.temperature
    )

    path = os.path.join(config.output_dir, "generation.jsonl")
    with open(path, "w") as f:
        for prefix, generation in zip(prefixes, generations):
            f.write(json.dumps({"prefix": prefix, "generation": generation}) + "\n")
    print(f"wrote {len(generations)} generations to {path}")


if __name__ == "__main__":
    main()
