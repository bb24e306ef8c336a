"""IFT6135 A2, Problem 2: LayerNorm, multi-headed causal attention and a mini GPT-1.

Questions 2.1 (LayerNorm), 2.2-2.5 (MultiHeadedAttention), 2.6-2.8 (MiniGPT1). The handout
disables nn.LayerNorm / torch.layer_norm and nn.MultiheadAttention in the graded tests, so
both are written here from tensor primitives. Shapes: B batch, S sequence, H heads,
hd head_size, E = H * hd embedding, V vocabulary.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from utils.embeddings import GPT1Embedding


class LayerNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-5):
        super().__init__()
        self.hidden_size = hidden_size
        self.eps = eps

        self.weight = nn.Parameter(torch.Tensor(hidden_size))
        self.bias = nn.Parameter(torch.Tensor(hidden_size))

        self.reset_parameters()

    def forward(self, inputs):
        """Layer normalisation over the last dimension, then a learned affine map.

            outputs = (inputs - E[inputs]) / sqrt(Var[inputs] + eps) * weight + bias

        with the mean and the *biased* variance (divide by n, not n - 1) taken over the last
        dimension only.

        Parameters
        ----------
        inputs (`torch.FloatTensor` of shape `(*dims, hidden_size)`)
            Any number of leading dimensions.

        Returns
        -------
        outputs (`torch.FloatTensor` of shape `(*dims, hidden_size)`)
        """
        # TODO: normalise over the last dimension (biased variance, eps inside the square
        # root), then scale by self.weight and shift by self.bias.
        # BEGIN SOLUTION
        mean = inputs.mean(dim=-1, keepdim=True)  # (*dims, 1)
        variance = ((inputs - mean) ** 2).mean(dim=-1, keepdim=True)  # biased, (*dims, 1)
        normalised = (inputs - mean) / torch.sqrt(variance + self.eps)
        return normalised * self.weight + self.bias
        # END SOLUTION

    def reset_parameters(self):
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)


class MultiHeadedAttention(nn.Module):
    def __init__(self, head_size, num_heads, sequence_length):
        super().__init__()
        self.head_size = head_size
        self.num_heads = num_heads
        self.sequence_length = sequence_length

        # TODO: add the query, key, value and output projections (all with biases).
        # BEGIN SOLUTION: pass
        embedding_size = num_heads * head_size
        self.q_proj = nn.Linear(embedding_size, embedding_size)
        self.k_proj = nn.Linear(embedding_size, embedding_size)
        self.v_proj = nn.Linear(embedding_size, embedding_size)
        self.out_proj = nn.Linear(embedding_size, embedding_size)
        # END SOLUTION

    def get_attention_weights(self, queries, keys):
        """Causal attention weights of every head: softmax(Q K^T / sqrt(head_size)).

        Position t attends to positions tau <= t only. With s_t(tau) = 1 if tau <= t else 0,
        the logits x are replaced by x * s - 1e4 * (1 - s) before the softmax, so masked
        weights are exactly 0 in float32 while x stays far above -1e4.

        Parameters
        ----------
        queries (`torch.FloatTensor` of shape `(batch_size, num_heads, sequence_length, head_size)`)
            `queries[b, h, t]` is the query of head h at position t of sequence b.

        keys (`torch.FloatTensor` of shape `(batch_size, num_heads, sequence_length, head_size)`)
            `keys[b, h, t]` is the key of head h at position t of sequence b.

        Returns
        -------
        attention_weights (`torch.FloatTensor` of shape `(batch_size, num_heads, sequence_length, sequence_length)`)
            `attention_weights[b, h, t, tau]` is how much position t attends to position tau;
            each row sums to 1 and is 0 for tau > t.
        """
        # TODO: scaled dot products, causal mask (x * s - 1e4 * (1 - s)), softmax over the
        # key positions.
        # BEGIN SOLUTION
        sequence_length = queries.size(-2)
        scores = queries @ keys.transpose(-2, -1) / math.sqrt(self.head_size)  # (B, H, S, S)
        # s[t, tau] = 1 where position t may attend to position tau (tau <= t).
        s = torch.ones(sequence_length, sequence_length, dtype=scores.dtype, device=scores.device)
        s = torch.tril(s)  # (S, S), broadcast over (B, H)
        scores = scores.masked_fill(s == 0, float("-inf"))
        return torch.softmax(scores, dim=-1)
        # END SOLUTION

    def apply_attention(self, queries, keys, values):
        """Attended values of every head, heads concatenated.

            outputs = merge_heads(attention_weights(Q, K) V)

        Parameters
        ----------
        queries, keys, values (`torch.FloatTensor` of shape `(batch_size, num_heads, sequence_length, head_size)`)
            Per-head queries, keys and values.

        Returns
        -------
        outputs (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_heads * head_size)`)
            `outputs[b, t]` is the concatenation over heads of the attended values at
            position t of sequence b.
        """
        # TODO: weights from get_attention_weights, weighted sum of the values, merge heads.
        # BEGIN SOLUTION
        weights = self.get_attention_weights(queries, keys)  # (B, H, S, S)
        attended = weights @ values  # (B, H, S, hd)
        return self.merge_heads(attended)  # (B, S, H * hd)
        # END SOLUTION

    def split_heads(self, tensor):
        """Split concatenated head vectors into a heads axis placed before the sequence.

        Only a reshape and a transpose, the exact inverse of `merge_heads`:
        `split_heads(x)[b, h, s, d] == x[b, s, h * dim + d]`.

        Parameters
        ----------
        tensor (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_heads * dim)`)
            `dim` may be any size (not only head_size).

        Returns
        -------
        output (`torch.FloatTensor` of shape `(batch_size, num_heads, sequence_length, dim)`)
        """
        # TODO: reshape to separate the heads, then swap the sequence and heads axes.
        # BEGIN SOLUTION
        batch_size, sequence_length, _ = tensor.shape
        output = tensor.reshape(batch_size, sequence_length, self.num_heads, -1)  # (B, S, H, dim)
        return output.transpose(1, 2)  # (B, H, S, dim)
        # END SOLUTION

    def merge_heads(self, tensor):
        """Concatenate the head vectors again: the exact inverse of `split_heads`.

        `merge_heads(y)[b, s, h * dim + d] == y[b, h, s, d]`.

        Parameters
        ----------
        tensor (`torch.FloatTensor` of shape `(batch_size, num_heads, sequence_length, dim)`)

        Returns
        -------
        output (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_heads * dim)`)
        """
        # TODO: swap the heads and sequence axes back, then flatten the heads.
        # BEGIN SOLUTION
        batch_size, num_heads, sequence_length, dim = tensor.shape
        output = tensor.transpose(1, 2)  # (B, S, H, dim)
        return output.reshape(batch_size, sequence_length, num_heads * dim)  # (B, S, H * dim)
        # END SOLUTION

    def forward(self, hidden_states):
        """Multi-headed causal self-attention.

            Q = X W_Q + b_Q,  K = X W_K + b_K,  V = X W_V + b_V
            outputs = attention(Q, K, V) W_O + b_O

        Parameters
        ----------
        hidden_states (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_heads * head_size)`)

        Returns
        -------
        outputs (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_heads * head_size)`)
        """
        # TODO: project, split the heads, attend, project the merged heads.
        # BEGIN SOLUTION
        queries = self.split_heads(self.q_proj(hidden_states))  # (B, H, S, hd)
        keys = self.split_heads(self.k_proj(hidden_states))  # (B, H, S, hd)
        values = self.split_heads(self.v_proj(hidden_states))  # (B, H, S, hd)
        attended = self.apply_attention(queries, keys, values)  # (B, S, H * hd)
        return self.out_proj(attended)  # (B, S, E)
        # END SOLUTION


class Block(nn.Module):
    def __init__(self, head_size, mlp_hidden_size, num_heads, sequence_length):
        """A transformer decoder layer: attention then MLP, each followed by a residual
        connection and a LayerNorm (post-LN, as in GPT-1)."""
        super().__init__()
        self.head_size = head_size
        self.mlp_hidden_size = mlp_hidden_size
        self.num_heads = num_heads
        self.sequence_length = sequence_length
        self.hidden_size = num_heads * head_size

        self.attention = MultiHeadedAttention(head_size, num_heads, sequence_length)
        self.norm1 = LayerNorm(self.hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(self.hidden_size, mlp_hidden_size),
            nn.GELU(),
            nn.Linear(mlp_hidden_size, self.hidden_size),
        )
        self.norm2 = LayerNorm(self.hidden_size)

    def forward(self, hidden_states):
        attention_outputs = self.norm1(self.attention(hidden_states) + hidden_states)
        return self.norm2(self.mlp(attention_outputs) + attention_outputs)


class MiniGPT1(nn.Module):
    def __init__(
        self,
        vocabulary_size=40479,
        embedding_size=768,
        sequence_length=256,
        num_heads=12,
        num_layers=4,
        learn_embeddings=False,
        _tokens_embedding_weight=None,
        _positional_embedding_weight=None,
    ):
        super().__init__()
        self.vocabulary_size = vocabulary_size
        self.embedding_size = embedding_size
        self.sequence_length = sequence_length
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.learn_embeddings = learn_embeddings
        self.head_size = embedding_size // num_heads

        self.embedding = GPT1Embedding(
            vocabulary_size,
            embedding_size,
            sequence_length,
            _tokens_embedding_weight=_tokens_embedding_weight,
            _positional_embedding_weight=_positional_embedding_weight,
        )
        self.layers = nn.ModuleList(
            [
                Block(self.head_size, 4 * embedding_size, num_heads, sequence_length)
                for _ in range(num_layers)
            ]
        )
        self.classifier = nn.Linear(embedding_size, vocabulary_size, bias=False)

        # The output layer reuses the token embedding matrix (GPT-1's weight tying).
        self.classifier.weight = self.embedding.tokens.weight

        # Pretrained embeddings stay frozen unless asked otherwise.
        self.embedding.requires_grad_(learn_embeddings)

    def get_embeddings(self, inputs):
        """Token plus position embeddings of the input sequences (see GPT1Embedding).

        Parameters
        ----------
        inputs (`torch.LongTensor` of shape `(batch_size, sequence_length)`)

        Returns
        -------
        embeddings (`torch.FloatTensor` of shape `(batch_size, sequence_length, embedding_size)`)
            `embeddings[b, t]` embeds the token at position t (counted from 0) of sequence b.
        """
        # TODO: positions 0, 1, ..., sequence_length - 1 for every sequence, then
        # self.embedding(tokens, positions).
        # BEGIN SOLUTION
        batch_size, sequence_length = inputs.shape
        positions = torch.arange(sequence_length, device=inputs.device)  # (S,)
        positions = positions.unsqueeze(0).expand(batch_size, sequence_length)  # (B, S)
        return self.embedding(inputs, positions)  # (B, S, E)
        # END SOLUTION

    def forward(self, inputs):
        """Log-probabilities of the next token at every position.

        Parameters
        ----------
        inputs (`torch.LongTensor` of shape `(batch_size, sequence_length)`)

        Returns
        -------
        log_probas (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocabulary_size)`)
            `log_probas[b, t, i]` is log p(token at t + 1 is i | tokens 0..t) for sequence b:
            log-probabilities, not logits.
        """
        # TODO: embeddings, every layer in order, classifier, log-softmax.
        # BEGIN SOLUTION
        hidden_states = self.get_embeddings(inputs)  # (B, S, E)
        for layer in self.layers:
            hidden_states = layer(hidden_states)  # (B, S, E)
        logits = self.classifier(hidden_states)  # (B, S, V)
        return F.log_softmax(logits, dim=-1)
        # END SOLUTION

    def loss(self, log_probas, targets, mask):
        """Mean negative log-likelihood, defined as for the LSTM (Problem 1, question 2).

        Parameters
        ----------
        log_probas (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocabulary_size)`)
        targets (`torch.LongTensor` of shape `(batch_size, sequence_length)`)
        mask (`torch.FloatTensor` of shape `(batch_size, sequence_length)`)
            1 on real positions, 0 on padding.

        Returns
        -------
        loss (`torch.FloatTensor` scalar, shape `()`)
            Each sequence's mean NLL over its real positions, averaged over the batch.
        """
        # TODO: as in LSTM.loss.
        # BEGIN SOLUTION
        target_log_probas = log_probas.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, S)
        nll_per_sequence = -(target_log_probas * mask).sum(dim=1) / mask.sum(dim=1)  # (B,)
        return nll_per_sequence.mean()
        # END SOLUTION

    @classmethod
    def load_embeddings_from(cls, filename, num_heads=12, num_layers=4, learn_embeddings=False):
        """Build a MiniGPT1 from an `embeddings.npz` with arrays `tokens` and `position`."""
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
            num_heads,
            num_layers,
            learn_embeddings,
            _tokens_embedding_weight=tokens_weight,
            _positional_embedding_weight=positional_weight,
        )
