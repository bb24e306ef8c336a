"""The Wikitext-2 data set as fixed-length language-modelling examples (provided).

Each split is a `wiki.{split}.npz` with a flat array `tokens` (GPT-1 BPE ids, 0 is never a
token) and `sizes` (tokens per document). An example is a block of `max_length + 1`
consecutive tokens: `source` is the block without its last token, `target` the block
without its first, both zero-padded to `max_length`, and `mask` is 1 on real positions.
"""
import os

import numpy as np
import torch
from torch.utils.data import Dataset


class Wikitext2(Dataset):
    splits = ("train", "validation", "test")
    break_modes = ("none", "lines", "complete")

    def __init__(self, root, split="train", break_mode="none", max_length=256, min_length=1):
        """
        Parameters
        ----------
        root (`str`): folder holding `wiki.{split}.npz`.
        split (`str`): one of "train", "validation", "test".
        break_mode (`str`): how the token stream is cut into blocks.
            "none": consecutive blocks of the whole stream, ignoring documents;
            "lines": blocks never cross a document boundary;
            "complete": whole documents packed into blocks (a document longer than a
            block is cut as in "lines").
        max_length (`int`): length of `source`, `target` and `mask`.
        min_length (`int`): blocks of at most this many tokens are dropped.
        """
        if split not in self.splits:
            raise ValueError(f"Unknown split {split!r}, expected one of {self.splits}")
        if break_mode not in self.break_modes:
            raise ValueError(f"Unknown break_mode {break_mode!r}, expected one of {self.break_modes}")
        self.root = root
        self.split = split
        self.break_mode = break_mode
        self.max_length = max_length
        self.min_length = min_length

        with np.load(os.path.join(root, f"wiki.{split}.npz")) as data:
            self.tokens = data["tokens"].astype(np.int64)
            self.sizes = data["sizes"].astype(np.int64)
        if self.sizes.sum() != self.tokens.size:
            raise ValueError(
                f"wiki.{split}.npz: sizes sum to {self.sizes.sum()} but there are "
                f"{self.tokens.size} tokens"
            )

        starts, lengths = self._blocks()
        keep = lengths > min_length
        self.starts, self.lengths = starts[keep], lengths[keep]

    def _blocks(self):
        """Start offset and length (at most max_length + 1) of every block."""
        ends = np.cumsum(self.sizes)
        if self.break_mode == "none":
            return _cut(np.array([0]), np.array([self.tokens.size]), self.max_length)
        if self.break_mode == "lines":
            return _cut(ends - self.sizes, ends, self.max_length)
        # "complete": greedy packing of whole documents; one pass over documents.
        block = self.max_length + 1
        spans, span_start, span_end = [], 0, 0
        for end, size in zip(ends, self.sizes):
            if end - span_start > block and span_end > span_start:
                spans.append((span_start, span_end))
                span_start = span_end
            span_end = end
        spans.append((span_start, span_end))
        spans = np.array(spans)
        return _cut(spans[:, 0], spans[:, 1], self.max_length)

    def __len__(self):
        return self.starts.size

    def __getitem__(self, index):
        start, length = self.starts[index], self.lengths[index]
        block = torch.from_numpy(self.tokens[start : start + length])
        n = length - 1  # number of (source, target) pairs in this block
        source = torch.zeros(self.max_length, dtype=torch.long)
        target = torch.zeros(self.max_length, dtype=torch.long)
        mask = torch.zeros(self.max_length, dtype=torch.float)
        source[:n] = block[:-1]
        target[:n] = block[1:]
        mask[:n] = 1.0
        return {"source": source, "target": target, "mask": mask}


def _cut(span_starts, span_ends, max_length):
    """Cut each span [start, end) into blocks of max_length + 1 tokens.

    Consecutive blocks share one token (stride max_length), so that every token of a span
    but its first is the target of exactly one position.
    """
    counts = np.maximum(np.ceil((span_ends - span_starts - 1) / max_length), 1).astype(np.int64)
    span_of_block = np.repeat(np.arange(span_starts.size), counts)  # (num_blocks,)
    first_block = np.cumsum(counts) - counts
    index_in_span = np.arange(span_of_block.size) - first_block[span_of_block]
    starts = span_starts[span_of_block] + index_in_span * max_length
    lengths = np.minimum(max_length + 1, span_ends[span_of_block] - starts)
    return starts, lengths
