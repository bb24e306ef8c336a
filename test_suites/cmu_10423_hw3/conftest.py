"""Shared fixtures of the CMU 10-423 HW3 suite (LoRA for GPT-2).

Every point is decided by the grading parent from what a test sends (`snapshot.check` against
the reference's values, `snapshot.judge` with a rule of `judges.py`); the asserts in the tests
only give the student an early, precise message.

The tests never rely on the order in which a student's code draws random numbers: the values
that matter are drawn from the test's own generators (`randn`) and written into the layer
(`set_lora_weights`, `fill_parameters`). Generation is replaced by fixed continuations
(`stub_sampler`), so get_accuracy is graded on its own, without a checkpoint or a download.

The suite tests through what the course's real starter (F24/S25 handout files) exposes as well
as through the reference's names, and accepts both forms where they differ:
`CustomDataLoader(dataset, tokenizer, batch_size)` gets a `datasets.Dataset` (which the starter
maps), get_accuracy may return `(accuracy, positive, negative)` or the starter's
`(accuracy, positive, negative, correct)`, and GPT-2 weights are served offline under the
model-type names ('gpt2', 'gpt2-medium', ...) that the course's `GPT.from_pretrained` asserts.
"""

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from grader.seeding import fill_parameters

GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
# the shape of the stand-in for every GPT-2 checkpoint (the course's from_pretrained fixes
# 124M to 1.5B parameters by name; a test needs a few thousand)
TINY_GPT2 = {"n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 64, "block_size": 32}
LABEL_WORDS = ("negative", "positive")  # the handout's example labels, by the 0/1 label
# label forms the handout allows: numbers as they are, or words "such as positive/negative"
ACCEPTED_LABELS = {0: ("0", "negative", "neg", "bad"), 1: ("1", "positive", "pos", "good")}


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    """Normal values from the test's own generator: the same for every submission, whatever
    random numbers the submission's code drew before."""
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def orthogonal(n: int, seed: int) -> torch.Tensor:
    """A random n x n orthogonal matrix (non-identity, non-diagonal, perfectly conditioned)."""
    q, r = torch.linalg.qr(randn(n, n, seed=seed).double())
    return (q * torch.sign(torch.diagonal(r))).float()


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


def module_of(proxy):
    """The submission's module object behind `sub.<alias>` (for monkeypatching its globals)."""
    return sys.modules[proxy.__name__]


def as_dataset(records: list[dict]):
    """Records as a `datasets.Dataset`, what the course's train.py hands to CustomDataLoader
    (its starter calls `dataset.map`); a plain list where the package is missing."""
    try:
        from datasets import Dataset
    except ImportError:
        return list(records)
    return Dataset.from_list([dict(r) for r in records])


class Draw:
    """The suite's deterministic draws, as a fixture (`draw.randn(...)`, `draw.orthogonal(...)`)."""

    randn = staticmethod(randn)
    orthogonal = staticmethod(orthogonal)


@pytest.fixture
def draw():
    return Draw


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
def make_loader(sub, hf_tokenizer):
    """make_loader(records) -> the submission's CustomDataLoader built as train.py builds it:
    on a datasets.Dataset, with a Hugging Face tokenizer."""

    def make(records, batch_size=4):
        return sub.dataloader.CustomDataLoader(as_dataset(records), hf_tokenizer, batch_size)

    return make


def instruction_text(loader, rec: dict) -> dict:
    """The record after the submission's _add_instruction_finetuning (filled in place or
    returned: both are fine)."""
    copy_ = dict(rec)
    out = loader._add_instruction_finetuning(copy_)
    return out if isinstance(out, dict) else copy_


@pytest.fixture
def instruction_observations(sub):
    """instruction_observations(loader, records) -> what the parent's `instruction_texts` rule
    reads: each record's prompt, its instruction-tuned text, and whether text and label were
    kept as they were."""

    def observe(loader, records):
        obs = {"prompts": [], "texts": [], "kept": []}
        for rec in records:
            out = instruction_text(loader, rec)
            obs["prompts"].append(sub.dataloader.get_sentiment_prompt(rec["text"]))
            obs["texts"].append(out.get("instr_tuned_text"))
            obs["kept"].append(out.get("text") == rec["text"] and out.get("label") == rec["label"])
        assert all(isinstance(t, str) for t in obs["texts"]), (
            '_add_instruction_finetuning must add a string rec["instr_tuned_text"]')
        return obs

    return observe


@pytest.fixture
def label_strings(sub, make_loader, test_records):
    """The submission's own label strings (what its instruction text puts after the prompt for
    label 0 and 1), if they are an accepted form; otherwise the handout's words. Generations in
    the get_accuracy tests use them, so numeric labels are graded like words."""
    try:
        loader = make_loader(test_records[:2])
        rec = test_records[0]
        prompt = sub.dataloader.get_sentiment_prompt(rec["text"])
        found = []
        for label in (0, 1):
            text = instruction_text(loader, dict(rec, label=label))["instr_tuned_text"]
            found.append(text[len(prompt):].strip() if text.startswith(prompt) else "")
    except Exception:  # noqa: BLE001 - a broken dataloader is graded by its own tests
        return LABEL_WORDS
    ok = all(found[i].strip(" .!:").casefold() in ACCEPTED_LABELS[i] for i in (0, 1)) and found[0] != found[1]
    return tuple(found) if ok else LABEL_WORDS


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
def tiny_hf():
    """A tiny GPT-2 of Hugging Face (seeded, dropout off): the weights every GPT-2 name loads."""
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=TINY_GPT2["vocab_size"], n_positions=TINY_GPT2["block_size"],
                                        n_embd=TINY_GPT2["n_embd"], n_layer=TINY_GPT2["n_layer"],
                                        n_head=TINY_GPT2["n_head"], resid_pdrop=0.0, embd_pdrop=0.0,
                                        attn_pdrop=0.0))
    return hf.eval()


@pytest.fixture
def offline_gpt2(sub, tiny_hf, monkeypatch):
    """GPT-2 checkpoints offline, under the names the course's `GPT.from_pretrained(model_type)`
    accepts: `GPT2LMHeadModel.from_pretrained(<any name>)` gives a copy of `tiny_hf`, and the
    model's GPTConfig is built at that tiny shape (the course's from_pretrained hard-codes the
    size of each name). Returns the Hugging Face model."""
    from transformers import GPT2LMHeadModel

    def from_pretrained(cls, name, *args, **kwargs):
        return copy.deepcopy(tiny_hf)

    monkeypatch.setattr(GPT2LMHeadModel, "from_pretrained", classmethod(from_pretrained))
    model_module = module_of(sub.model)
    real_config = model_module.GPTConfig

    def tiny_config(*args, **kwargs):
        return real_config(*args, **{**kwargs, **TINY_GPT2})

    monkeypatch.setattr(model_module, "GPTConfig", tiny_config)
    return tiny_hf


class _StubGeneration:
    """Stand-in for ModelSampler.get_generation: the prompt's review picks a fixed
    continuation, returned after the prompt as the starter's get_generation does."""

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
    continuation after each record's prompt (no model, no data download). The test split is a
    datasets.Dataset, as in the course's generate.py."""

    def make(records, continuations):
        sampler = object.__new__(sub.generate.ModelSampler)
        generation = _StubGeneration(records, continuations)
        sampler.__dict__.update(
            out_dir=str(tmp_path), init_from="resume", device="cpu", max_new_tokens=5, temperature=1.0,
            top_k=200, ckpt_last=False, test_dataset=as_dataset(records), get_generation=generation,
        )
        return sampler, generation

    return make


def accuracy_result(result, n_records: int) -> dict:
    """get_accuracy's result in one form: the reference returns (accuracy, positive, negative),
    the course's starter (accuracy, positive, negative, correct); both are accepted."""
    assert isinstance(result, tuple) and len(result) in (3, 4), (
        "get_accuracy must return (accuracy, positive_predictions, negative_predictions) "
        "(the starter's form with the number of correct predictions as a 4th value is fine too)")
    accuracy, n_pos, n_neg = (float(result[0]), int(result[1]), int(result[2]))
    correct = int(result[3]) if len(result) == 4 else round(accuracy * n_records)
    return {"accuracy": accuracy, "positive": n_pos, "negative": n_neg, "correct": correct}


@pytest.fixture
def accuracy_of():
    return accuracy_result
