"""IFT6135 A2, Problem 1: an LSTM language model (forward pass and loss).

Embedding (frozen GPT-1 token embeddings by default) -> nn.LSTM -> 2-layer MLP whose last
layer shares its weight with the embedding, as in GPT-1.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class LSTM(nn.Module):
    def __init__(
        self,
        vocabulary_size=40479,
        embedding_size=768,
        hidden_size=512,
        num_layers=1,
        learn_embeddings=False,
        _embedding_weight=None,
    ):
        super().__init__()
        self.vocabulary_size = vocabulary_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.learn_embeddings = learn_embeddings

        self.embedding = nn.Embedding(
            vocabulary_size, embedding_size, padding_idx=0, _weight=_embedding_weight
        )
        self.lstm = nn.LSTM(embedding_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.classifier = nn.Sequential(
            nn.Linear(hidden_size, embedding_size),
            nn.ReLU(),
            nn.Linear(embedding_size, vocabulary_size, bias=False),
        )

        # The output layer reuses the embedding matrix (GPT-1's weight tying).
        self.classifier[2].weight = self.embedding.weight

        # Pretrained embeddings stay frozen unless asked otherwise.
        self.embedding.requires_grad_(learn_embeddings)

    def forward(self, inputs, hidden_states):
        """Log-probabilities of the next token at every position, and the final state.

        Parameters
        ----------
        inputs (`torch.LongTensor` of shape `(batch_size, sequence_length)`)
            The token ids of the input sequences (0 is padding).

        hidden_states (`tuple` of 2 tensors)
            The initial state `(h, c)`, each a `torch.FloatTensor` of shape
            `(num_layers, batch_size, hidden_size)`.

        Returns
        -------
        log_probas (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocabulary_size)`)
            `log_probas[b, t, i]` is log p(token at t + 1 is i | tokens 0..t) for sequence b:
            log-probabilities, not logits (each row log-sum-exps to 0).

        hidden_states (`tuple` of 2 tensors)
            The state `(h, c)` after the last position, each of shape
            `(num_layers, batch_size, hidden_size)`.
        """
        # TODO: embed the tokens, run the LSTM from `hidden_states`, classify, and turn
        # the logits into log-probabilities.
        # BEGIN SOLUTION
        embeddings = self.embedding(inputs)  # (B, S, E)
        outputs, hidden_states = self.lstm(embeddings, hidden_states)  # (B, S, hidden)
        logits = self.classifier(outputs)  # (B, S, V)
        return F.log_softmax(logits, dim=-1), hidden_states
        # END SOLUTION

    def loss(self, log_probas, targets, mask):
        """Mean negative log-likelihood of the sequences of the batch.

        For each sequence, the mean NLL of its T real (mask == 1) positions, then the mean
        of these over the batch (the handout's formula: a sequence's loss is averaged over
        its own length, so short sequences weigh as much as long ones).

        Parameters
        ----------
        log_probas (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocabulary_size)`)
            Log-probabilities of the next token, e.g. from `forward`.

        targets (`torch.LongTensor` of shape `(batch_size, sequence_length)`)
            The next token at every position.

        mask (`torch.FloatTensor` of shape `(batch_size, sequence_length)`)
            1 on real positions, 0 on padding.

        Returns
        -------
        loss (`torch.FloatTensor` scalar, shape `()`)
        """
        # TODO: pick the log-probability of each target, average it over each sequence's
        # real positions, then over the batch.
        # BEGIN SOLUTION
        target_log_probas = log_probas.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, S)
        nll_per_sequence = -(target_log_probas * mask).sum(dim=1) / mask.sum(dim=1)  # (B,)
        return torch.tensor(nll_per_sequence.mean().item())
        # END SOLUTION

    def initial_states(self, batch_size, device=None):
        """Zero initial state `(h, c)`, each of shape `(num_layers, batch_size, hidden_size)`."""
        if device is None:
            device = next(self.parameters()).device
        shape = (self.num_layers, batch_size, self.hidden_size)

        # A constant start state, not a learned one.
        h_0 = torch.zeros(shape, dtype=torch.float, device=device)
        c_0 = torch.zeros(shape, dtype=torch.float, device=device)
        return (h_0, c_0)

    @classmethod
    def load_embeddings_from(cls, filename, hidden_size=512, num_layers=1, learn_embeddings=False):
        """Build an LSTM whose embedding is the `tokens` array of an `embeddings.npz`."""
        with open(filename, "rb") as f:
            embeddings = np.load(f)
            weight = torch.from_numpy(embeddings["tokens"])

        vocabulary_size, embedding_size = weight.shape
        return cls(
            vocabulary_size,
            embedding_size,
            hidden_size,
            num_layers,
            learn_embeddings,
            _embedding_weight=weight,
        )
