"""Shared fixtures of the CMU 10-423 HW3 suite (LoRA for GPT-2).

The tests never rely on the order in which a student's __init__ draws random numbers: weights
that matter are written into the layer by the test (`set_lora_weights`, `fill_parameters`).
Generation is replaced by fixed continuations (`stub_sampler`), so get_accuracy is graded on
its own, without a checkpoint or a download.
"""

import json
import zlib
from pathlib import Path

import pytest
import torch
from torch import nn


def set_lora_weights(layer: nn.Module, weight, bias, lora_A=None, lora_B=None) -> nn.Module:
    """Copy W0, b, A and B into a LoRALinear (A: (r, in), B: (out, r), as the handout fixes)."""
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
        if lora_A is not None:
            layer.lora_A.copy_(lora_A)
            layer.lora_B.copy_(lora_B)
    return layer


def fill_parameters(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter values that depend only on its name and the seed (LoRA B included,
    so the update is not zero)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            noise = torch.randn(param.shape, generator=gen)
            if param.dim() == 1 and name.endswith("weight"):  # layer-norm gains
                value = 1 + 0.1 * noise
            elif param.dim() == 1:  # biases
                value = 0.1 * noise
            else:  # (out, in) matrices, embeddings, A and B: unit-scale outputs
                value = noise / param.shape[1] ** 0.5
            param.copy_(value)
    return model


@pytest.fixture
def fill_params():
    return fill_parameters


@pytest.fixture
def set_lora():
    return set_lora_weights


@pytest.fixture
def test_records(sub) -> list[dict]:
    """Rotten-Tomatoes-format records ({"text", "label"}) of the fixture's test split."""
    path = Path(sub.fixtures) / "rotten_tomatoes" / "test.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture
def hf_tokenizer(sub):
    """The fixture's byte-level BPE as a Hugging Face tokenizer, padded with EOS on the right."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(Path(sub.fixtures) / "tokenizer.json"),
                                  eos_token="<|endoftext|>")
    tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


@pytest.fixture
def tiny_config(sub):
    """tiny_config(**overrides) -> a small GPTConfig of the submission's model.py."""

    def make(**overrides):
        args = {"block_size": 32, "vocab_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 16,
                "dropout": 0.0, "bias": True, "lora_rank": 4, "lora_alpha": 8.0, "lora_dropout": 0.0}
        args.update(overrides)
        return sub.model.GPTConfig(**args)

    return make


@pytest.fixture
def hf_checkpoint(tmp_path):
    """A tiny GPT-2 saved with save_pretrained (safetensors) in a local folder: what
    GPT.from_pretrained reads for 'gpt2-medium', without the download. Returns (path, hf model)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    path = tmp_path / "tiny-gpt2"
    hf.save_pretrained(path)
    return path, hf.eval()


class _StubSampler:
    """Stand-in for the parts of ModelSampler that get_accuracy uses: the prompt's review picks
    a fixed continuation, returned after the prompt as get_generation does."""

    def __init__(self, records, continuations):
        self.records = records
        self.continuations = continuations
        self.prompts = []

    def __call__(self, prompt):
        self.prompts.append(prompt)
        hits = [i for i, rec in enumerate(self.records) if rec["text"] in prompt]
        assert len(hits) == 1, "get_accuracy must prompt with get_sentiment_prompt(record['text'])"
        return prompt + self.continuations[hits[0]]


@pytest.fixture
def stub_sampler(sub, tmp_path):
    """stub_sampler(records, continuations) -> a ModelSampler whose model 'writes' the given
    continuation after each record's prompt (no model, no data download)."""

    def make(records, continuations):
        sampler = object.__new__(sub.generate.ModelSampler)
        generation = _StubSampler(records, continuations)
        sampler.__dict__.update(
            out_dir=str(tmp_path), init_from="resume", device="cpu", max_new_tokens=5, temperature=1.0,
            top_k=200, ckpt_last=False, test_dataset=list(records), get_generation=generation,
        )
        return sampler, generation

    return make
