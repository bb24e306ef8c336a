"""An offline stand-in for tiktoken's "gpt2" encoding, for the CMU 11-667 A2 fixtures.

The course tokenises with `tiktoken.get_encoding("gpt2")`, whose files are downloaded on first
use. Here nothing may be downloaded, so this module learns a small byte-level BPE (same
pre-tokenisation regex as GPT-2, about 1000 tokens) on the synthetic fixture text, stores it in
tiktoken's own `.tiktoken` file format, and loads it as a real `tiktoken.Encoding` with
`<|endoftext|>` as its end-of-text token. A tiny vocabulary keeps the test models tiny.

    python -m tools.cmu_11667_a2.tokenizer build     # rewrite fixtures/cmu_11667_a2/tokenizer/

`load_encoding()` returns the real gpt2 encoding instead when tiktoken's cache already holds its
files (it never downloads them); `load_encoding(prefer_gpt2=False)` always returns the fixture
encoding, which is what the graded tests use (their snapshots depend on it).
"""

import argparse
import base64
import hashlib
import json
import os
import tempfile
from pathlib import Path

import tiktoken

from grader import project_root

FIXTURE_DIR = project_root() / "fixtures" / "cmu_11667_a2" / "tokenizer"
RANKS_FILE = "fixture_bpe.tiktoken"
TEXT_FILE = "corpus.txt"
ENCODING_NAME = "lmgrade_fixture_bpe"
ENDOFTEXT = "<|endoftext|>"
# GPT-2's pre-tokenisation regex (tiktoken's r50k pattern): contractions, letter runs, digit
# runs, punctuation runs and whitespace, each optionally led by one space
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# words the suite needs as single tokens: the classification labels of the code and of the PDF
REQUIRED_TOKENS = [" positive", " negative", " good", " bad"]
VOCAB_SIZE = 1000  # mergeable tokens; <|endoftext|> comes after them

GPT2_FILES = {  # tiktoken's download URLs for gpt2 and the sha256 of their contents
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",  # noqa: E501
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",  # noqa: E501
}


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (used by HF byte-level BPE)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def train_ranks(text: str, vocab_size: int = VOCAB_SIZE) -> dict[bytes, int]:
    """Learn byte-level BPE merges on text; return tiktoken mergeable ranks (bytes -> rank).

    Ranks 0-255 are the single bytes; merged tokens follow in the order the trainer learned
    them, which is the merge priority tiktoken applies (lowest rank first).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(text.split("\n\n"), trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]

    to_byte = {char: b for b, char in _byte_to_unicode().items()}
    ranks = {bytes([b]): b for b in range(256)}
    for merge in merges:
        left, right = merge if isinstance(merge, list) else merge.split(" ")
        token = bytes(to_byte[c] for c in left + right)
        ranks.setdefault(token, len(ranks))  # two merges may spell the same bytes: keep the first
    return ranks


def save_ranks(ranks: dict[bytes, int], path: Path) -> None:
    """Write ranks in tiktoken's `.tiktoken` format: one "base64(token) rank" line each."""
    with open(path, "wb") as f:
        for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
            f.write(base64.b64encode(token) + b" " + str(rank).encode() + b"\n")


def read_ranks(path: Path) -> dict[bytes, int]:
    """Read a `.tiktoken` file. (tiktoken's own loader would also copy it into its cache.)"""
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def fixture_encoding(path: Path | None = None) -> tiktoken.Encoding:
    """The fixture BPE as a tiktoken.Encoding; `<|endoftext|>` is its last token id."""
    ranks = read_ranks(path or FIXTURE_DIR / RANKS_FILE)
    return tiktoken.Encoding(
        name=ENCODING_NAME,
        pat_str=GPT2_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: len(ranks)},
    )


def gpt2_is_cached() -> bool:
    """True when tiktoken can build "gpt2" from its cache alone (files present, hashes right)."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":  # caching disabled: tiktoken would download
        return False
    for url, sha256 in GPT2_FILES.items():
        path = Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
            return False
    return True


def load_encoding(prefer_gpt2: bool = True) -> tiktoken.Encoding:
    """The real gpt2 encoding if it is cached locally (never downloaded), else the fixture BPE."""
    if prefer_gpt2 and gpt2_is_cached():
        return tiktoken.get_encoding("gpt2")
    return fixture_encoding()


def build(out_dir: Path = FIXTURE_DIR, chars: int = 200_000, seed: int = 0) -> tiktoken.Encoding:
    """Regenerate the fixture text and the BPE ranks under out_dir; check the required tokens."""
    from tools.cmu_11667_a2.fixture_text import generate_text

    out_dir.mkdir(parents=True, exist_ok=True)
    text = generate_text(chars, seed)
    (out_dir / TEXT_FILE).write_text(text)
    save_ranks(train_ranks(text), out_dir / RANKS_FILE)
    encoding = fixture_encoding(out_dir / RANKS_FILE)
    for word in REQUIRED_TOKENS:
        encoding.encode_single_token(word)  # raises KeyError if the BPE did not learn the word
    assert encoding.decode(encoding.encode(text)) == text, "the fixture BPE does not round-trip"
    return encoding


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "info"])
    parser.add_argument("--out", type=Path, default=FIXTURE_DIR)
    args = parser.parse_args()
    encoding = build(args.out) if args.command == "build" else load_encoding()
    print(f"{encoding.name}: n_vocab={encoding.n_vocab}, eot_token={encoding.eot_token}")


if __name__ == "__main__":
    main()
