"""Shared fixtures of the Duke ECE 661 HW3 suite (LabRNN: IMDB LSTM; LabLLM: GPT-2).

Nothing here downloads: the IMDB reviews, WikiText lines and the GPT-2 stand-in come from
`fixtures/duke_ece661_hw3/` (see tools/duke_ece661_hw3/). The course's `HyperParams` reads
NLTK's stop words, whose data needs a download; where that data is missing, `hparams` serves
scikit-learn's list under the same call, so a starter-based submission still imports and runs.
Tests that depend on the stop words pass their own set. Helpers and shared word lists reach the
tests through the `lab` fixture.
"""
import copy
import csv
from types import SimpleNamespace

import pytest
import torch

# Words that are stop words in neither NLTK's nor scikit-learn's English list.
CONTENT_WORDS = ["good", "movie", "great", "plot", "awful", "acting", "zebra", "boring", "cast",
                 "scene", "story", "music", "actor", "ending", "script"]
TEST_STOP_WORDS = {"the", "a", "and", "is", "of", "it", "this", "was"}


@pytest.fixture
def hparams(sub):
    """The submission's HyperParams(), with NLTK's stop-word list stubbed if its data is absent."""
    stopwords = _nltk_stopwords_loader()
    patched = False
    if stopwords is not None:
        try:
            stopwords.words("english")
        except LookupError:
            from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

            # LazyCorpusLoader resolves missing attributes by loading; an instance attribute
            # shadows that, and is removed again after the test.
            stopwords.__dict__["words"] = lambda *args, **kwargs: sorted(ENGLISH_STOP_WORDS)
            patched = True
    try:
        yield sub.rnn.HyperParams()
    finally:
        if patched:
            del stopwords.__dict__["words"]


def _nltk_stopwords_loader():
    try:
        from nltk.corpus import stopwords
    except ImportError:
        return None
    return stopwords


def write_imdb_csv(fixtures, path, rows: int):
    """The first `rows` reviews of the fixture IMDBDataset.csv, in the same format."""
    with open(fixtures / "IMDBDataset.csv", newline="", encoding="utf-8") as f:
        records = list(csv.reader(f))[: rows + 1]
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(records)
    return records[1:]


# -- LabLLM -----------------------------------------------------------------------------------


@pytest.fixture
def tiny_path(sub):
    return str(sub.fixtures / "tiny-gpt2")


@pytest.fixture
def tokenizer(tiny_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.pad_token = tok.eos_token  # as the lab does: GPT-2 has no padding token
    return tok


@pytest.fixture
def tiny_model(tiny_path):
    """The fixture GPT-2 (2 layers, width 32, dropout 0.1), left in training mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    model.train()
    return model


def sharpen(model, scale: float):
    """Scale the final layer norm so the next-token distribution is peaked.

    A random tiny model predicts every token with probability ~1/512, so per-token losses are
    all alike; a peaked one has confident right and wrong predictions, which makes averaging
    mistakes (per batch, per sequence) visible and makes sampling agree with greedy decoding.
    """
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(scale)
        model.transformer.ln_f.bias.mul_(scale)
    return model


WIKI_LINES = [
    "The bridge at Aldwick was completed in 1880 after 5 years of work .",
    "Edith Carrow was born in Lindale in 1871 .",
    "Local newspapers described the abbey as one of the finest in the region .",
    "In 1902 , Hugo Marsh moved to Port Ewan and worked as a painter .",
    "The canal closed in 1931 and reopened as a museum in 1960 .",
    "A fire in 1899 destroyed the east wing , which was rebuilt by Ada Winslow .",
    "The mill is 4 @,@ 300 metres long .",
]


def encode_rows(tokenizer, texts, max_length):
    """Rows like the lab's tokenized dataset: input_ids, attention_mask, labels (-100 at pads)."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "labels": labels[i]} for i in range(len(texts))]


@pytest.fixture
def lab(sub):
    """Helpers and word lists shared by the tests."""
    return SimpleNamespace(
        CONTENT_WORDS=CONTENT_WORDS, TEST_STOP_WORDS=TEST_STOP_WORDS, WIKI_LINES=WIKI_LINES,
        write_imdb_csv=lambda path, rows: write_imdb_csv(sub.fixtures, path, rows),
        sharpen=sharpen, encode_rows=encode_rows)
