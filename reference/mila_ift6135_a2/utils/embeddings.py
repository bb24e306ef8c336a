"""GPT-1 input embeddings (provided): token embedding plus learned position embedding."""
import numpy as np
import torch
from torch import nn


class GPT1Embedding(nn.Module):
    def __init__(
        self,
        vocabulary_size,
        embedding_size,
        sequence_length,
        _tokens_embedding_weight=None,
        _positional_embedding_weight=None,
    ):
        super().__init__()
        self.vocabulary_size = vocabulary_size
        self.embedding_size = embedding_size
        self.sequence_length = sequence_length

        # Token 0 is the zero-padding of the data set (utils/wikitext2.py).
        self.tokens = nn.Embedding(
            vocabulary_size, embedding_size, padding_idx=0, _weight=_tokens_embedding_weight
        )
        self.position = nn.Embedding(
            sequence_length, embedding_size, _weight=_positional_embedding_weight
        )

    def forward(self, tokens, positions):
        """Embeddings of the tokens at the given positions.

        Parameters
        ----------
        tokens (`torch.LongTensor` of shape `(batch_size, sequence_length)`)
            The token ids, in `[0, vocabulary_size)` (0 is padding).

        positions (`torch.LongTensor` of shape `(batch_size, sequence_length)`)
            The position of each token in its sequence, in `[0, sequence_length)`.
            For example `positions[0, 2] == 2` for the third token of a sequence.

        Returns
        -------
        embeddings (`torch.FloatTensor` of shape `(batch_size, sequence_length, embedding_size)`)
            The sum of the token embedding and the position embedding.
        """
        # nn.Embedding raises an IndexError deep in C++ on an out-of-range id; say which
        # input was wrong instead.
        if torch.any(positions >= self.sequence_length):
            raise RuntimeError(
                f"Some position is >= sequence_length ({self.sequence_length}); "
                f"positions must be in [0, {self.sequence_length})."
            )
        if torch.any(tokens >= self.vocabulary_size):
            raise RuntimeError(
                f"Some token id is >= vocabulary_size ({self.vocabulary_size})."
            )
        return self.tokens(tokens) + self.position(positions)  # (B, S, E)

    @classmethod
    def load_embeddings_from(cls, filename):
        """Build the module from an `embeddings.npz` with arrays `tokens` and `position`."""
        with open(filename, "rb") as f:
            embeddings = np.load(f)
            tokens_weight = torch.from_numpy(embeddings["tokens"])
            positional_weight = torch.from_numpy(embeddings["position"])
        vocabulary_size, embedding_size = tokens_weight.shape
        sequence_length = positional_weight.size(0)
        return cls(
            vocabulary_size,
            embedding_size,
            sequence_length,
            _tokens_embedding_weight=tokens_weight,
            _positional_embedding_weight=positional_weight,
        )
