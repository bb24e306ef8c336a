"""Rotten Tomatoes records as instruction-tuning text (HW3 section 2, "Instruction Fine-Tuning").

Each review becomes: the instruction prompt (INSTRUCTION_TEMPLATE with the review filled in),
then the label as a word. At test time generate.py shows the model the same prompt without the
label and reads the label from what it writes next.
"""

import json
import os

import torch
from torch.utils.data import DataLoader

# Q2.4 asks for this string; try others. `{text}` is replaced by the review, and the label
# word follows the template's last character.
INSTRUCTION_TEMPLATE = ("Classify the sentiment of the following movie review as positive or negative.\n"
                        "Review: {text}\n"
                        "Sentiment:")

# rotten_tomatoes: label 0 is a negative review, label 1 a positive one
LABEL_NAMES = ("negative", "positive")


def get_sentiment_prompt(text: str) -> str:
    """The prompt for one review: everything the model sees before the label."""
    return INSTRUCTION_TEMPLATE.format(text=text)


class CustomDataLoader:
    """Batches of (input_ids, next-token targets) built from instruction-tuned reviews."""

    def __init__(self, dataset, tokenizer, batch_size=8):
        # dataset: a datasets.Dataset split or any iterable of {"text": str, "label": 0 or 1}
        # tokenizer: a Hugging Face tokenizer with a pad token (train.py uses GPT-2's EOS)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.block_size = 1024  # GPT-2's context length
        self.formatted_dataset = []
        for rec in dataset:
            rec = dict(rec)
            out = self._add_instruction_finetuning(rec)
            self.formatted_dataset.append(rec if out is None else out)  # filled in place or returned

    def _add_instruction_finetuning(self, rec):
        """Add rec["instr_tuned_text"]: the prompt for rec["text"] followed by the label as a
        word ("positive" / "negative"). rec is a dict with "text" and "label"; returns rec."""
        # TODO: convert the 0/1 label to its word, then build the instruction-tuned text from
        # get_sentiment_prompt (the same prompt generate.py uses) and that word
        # BEGIN SOLUTION
        # the label as it is (0 or 1): the handout makes word labels optional
        rec["instr_tuned_text"] = f"{get_sentiment_prompt(rec['text'])} {int(rec['label'])}"
        return rec
        # END SOLUTION

    def collate_fn(self, batch):
        """Tokenise a list of records; returns input_ids (B, T) and targets (B, T), where the
        target at t is the token at t + 1 and -1 (ignored by the loss) past the end."""
        texts = [rec["instr_tuned_text"] for rec in batch]
        enc = self.tokenizer(texts, truncation=True, padding=True, max_length=self.block_size,
                             return_tensors="pt")
        input_ids = enc["input_ids"]  # (B, T), padded on the right
        keep = enc["attention_mask"].bool()  # (B, T), False on padding
        labels = torch.full_like(input_ids, -1)
        labels[:, :-1] = input_ids[:, 1:].masked_fill(~keep[:, 1:], -1)  # shift left by one
        return input_ids, labels

    def get_loader(self, shuffle=True):
        return DataLoader(self.formatted_dataset, batch_size=self.batch_size, shuffle=shuffle,
                          collate_fn=self.collate_fn)


def load_split(dataset, split):
    """One split ('train', 'validation' or 'test') as a list of {"text", "label"} records:
    from a folder holding <split>.jsonl, or from the Hugging Face hub ("rotten_tomatoes")."""
    if os.path.isdir(dataset):
        with open(os.path.join(dataset, f"{split}.jsonl"), encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    from datasets import load_dataset  # only needed for the hub

    return list(load_dataset(dataset, split=split))


def load_tokenizer(name):
    """GPT-2's tokenizer by hub name ("gpt2"), or a tokenizer.json file; padding uses EOS."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if name.endswith(".json"):
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=name, eos_token="<|endoftext|>")
    else:
        tokenizer = AutoTokenizer.from_pretrained(name)
    tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has no pad token; padded targets are ignored
    tokenizer.padding_side = "right"  # positions are learned: pad after the text, not before
    return tokenizer
