"""Write the offline fixtures of cmu_10423_hw3: a small Rotten-Tomatoes-format data set and a
byte-level BPE tokenizer trained on it.

    python -m tools.cmu_10423_hw3.make_fixtures [OUT_DIR]

The reviews are synthetic one-liners written from word lists (no download): each record is
{"text": str, "label": 0 or 1} as in the Hugging Face rotten_tomatoes splits, 0 being negative.
The output is deterministic: running it twice writes the same bytes.
"""

import json
import os
import random
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "cmu_10423_hw3")
SPLIT_SIZES = {"train": 192, "validation": 32, "test": 32}
VOCAB_SIZE = 384
EOS = "<|endoftext|>"

SUBJECTS = [
    "the film",
    "this movie",
    "the script",
    "the cast",
    "the director's latest",
    "the story",
    "the sequel",
    "the documentary",
    "the ending",
    "the lead performance",
    "the soundtrack",
    "this comedy",
    "the thriller",
    "the animation",
    "the dialogue",
]
GOOD = [
    "a delight",
    "warm and funny",
    "sharp, moving and smart",
    "beautifully made",
    "a triumph",
    "charming from start to finish",
    "genuinely touching",
    "clever and lively",
    "a joy to watch",
    "tender and wise",
    "gripping",
    "wonderfully acted",
]
BAD = [
    "a mess",
    "dull and lifeless",
    "painfully slow",
    "a tedious bore",
    "flat and forgettable",
    "clumsy and loud",
    "a waste of a fine cast",
    "muddled",
    "stale and predictable",
    "an endurance test",
    "shrill and empty",
    "badly written",
]
GOOD_TAILS = [
    "you will want to see it again",
    "it earns every laugh",
    "the best of the year",
    "a rare pleasure",
    "worth the ticket",
    "it stays with you",
]
BAD_TAILS = [
    "skip it",
    "it never finds its footing",
    "the jokes fall flat",
    "not worth the ticket",
    "you will check your watch",
    "it goes nowhere",
]
LINKS = [" ; ", " , and ", " -- ", " . ", " , but in the end "]
# the instruction prompt of the reference dataloader.py, so the tokenizer covers it too
PROMPT_TEXT = "Classify the sentiment of the following movie review as positive or negative.\nReview: {}\nSentiment: {}"


def make_review(rng, label):
    """One synthetic review of the given label (1: positive, 0: negative)."""
    adjectives, tails = (GOOD, GOOD_TAILS) if label == 1 else (BAD, BAD_TAILS)
    text = f"{rng.choice(SUBJECTS)} is {rng.choice(adjectives)}"
    if rng.random() < 0.7:
        text += rng.choice(LINKS) + rng.choice(tails)
    return text + " ."


def make_splits(seed=10423):
    """Balanced splits of unique reviews, keyed by split name."""
    rng = random.Random(seed)
    seen, splits = set(), {}
    for split, size in SPLIT_SIZES.items():
        records = []
        while len(records) < size:
            label = len(records) % 2  # balanced, as rotten_tomatoes is
            text = make_review(rng, label)
            if text not in seen:
                seen.add(text)
                records.append({"text": text, "label": label})
        rng.shuffle(records)
        splits[split] = records
    return splits


def train_tokenizer(texts):
    """Byte-level BPE like GPT-2's (any string encodes; decode inverts encode), with EOS."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def main(out_dir=DEFAULT_OUT):
    data_dir = os.path.join(out_dir, "rotten_tomatoes")
    os.makedirs(data_dir, exist_ok=True)
    splits = make_splits()
    for split, records in splits.items():
        with open(os.path.join(data_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(rec) + "\n" for rec in records)
    texts = [
        PROMPT_TEXT.format(rec["text"], ("negative", "positive")[rec["label"]])
        for records in splits.values()
        for rec in records
    ]
    train_tokenizer(texts).save(os.path.join(out_dir, "tokenizer.json"))


if __name__ == "__main__":
    main(*sys.argv[1:])
