"""Cut the Wikitext-2 (GPT-1 tokens) fixture slice from the course's full npz files.

Keeps the first whole documents of each split up to a token budget, in the same format
(`tokens` uint16, `sizes` int64):

    python -m tools.mila_ift6135_a2.make_data_slice /path/to/wikitext2_gpt1 fixtures/mila_ift6135_a2/data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

BUDGET = {"train": 60_000, "validation": 15_000, "test": 15_000}  # tokens per split


def slice_split(source: Path, target: Path, split: str, budget: int) -> tuple[int, int]:
    with np.load(source / f"wiki.{split}.npz") as data:
        tokens, sizes = data["tokens"], data["sizes"]
    ends = np.cumsum(sizes)
    documents = int(np.searchsorted(ends, budget, side="right"))  # whole documents only
    kept = tokens[: ends[documents - 1]]
    np.savez_compressed(
        target / f"wiki.{split}.npz", tokens=kept.astype(np.uint16), sizes=sizes[:documents].astype(np.int64)
    )
    return documents, kept.size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with the full wiki.{split}.npz")
    parser.add_argument("target", type=Path, help="folder to write the slice to")
    args = parser.parse_args(argv)
    args.target.mkdir(parents=True, exist_ok=True)
    for split, budget in BUDGET.items():
        documents, tokens = slice_split(args.source, args.target, split, budget)
        print(f"{split}: {documents} documents, {tokens} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
