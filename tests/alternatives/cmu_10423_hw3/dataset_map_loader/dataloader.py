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
        # the course starter's form: dataset is a datasets.Dataset, mapped record by record
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.block_size = 1024
        self.formatted_dataset = dataset.map(self._add_instruction_finetuning, remove_columns=dataset.column_names)

    def _add_instruction_finetuning(self, rec):
        """Add rec["instr_tuned_text"]: the prompt for rec["text"] followed by the label as a
        word ("positive" / "negative"). rec is a dict with "text" and "label"; returns rec."""
        # TODO: convert the 0/1 label to its word, then build the instruction-tuned text from
        # get_sentiment_prompt (the same prompt generate.py uses) and that word
        # BEGIN SOLUTION
        label_word = LABEL_NAMES[int(rec["label"])]
        rec["instr_tuned_text"] = f"{get_sentiment_prompt(rec['text'])} {label_word}"
        return rec
        # END SOLUTION

    def collate_fn(self, batch):
        """input_ids (B, T) and targets (B, T): the inputs shifted left by one, padded with the
        tokenizer's pad token (the starter's form; the loss then also learns to predict it)."""
        texts = [rec["instr_tuned_text"] for rec in batch]
        input_ids = self.tokenizer(texts, truncation=True, padding=True, max_length=self.block_size,
                                   return_tensors="pt")["input_ids"]
        pad = torch.full((input_ids.size(0), 1), self.tokenizer.pad_token_id, dtype=torch.long)
        return input_ids, torch.cat([input_ids[:, 1:], pad], dim=1)

    def get_loader(self, shuffle=True):
        return DataLoader(self.formatted_dataset, batch_size=self.batch_size, shuffle=shuffle,
                          collate_fn=self.collate_fn)


def load_split(dataset, split):
    """One split ('train', 'validation' or 'test') as a datasets.Dataset: from a folder
    holding <split>.jsonl, or from the Hugging Face hub ("rotten_tomatoes")."""
    from datasets import Dataset, load_dataset

    if os.path.isdir(dataset):
        with open(os.path.join(dataset, f"{split}.jsonl"), encoding="utf-8") as f:
            return Dataset.from_list([json.loads(line) for line in f if line.strip()])
    return load_dataset(dataset, split=split)


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
