"""CMU 11-667 Fall 2023, Assignment 2, Question 1.3: a decoder-only transformer (model.py).

Dimension key used in the shape comments:
    B: batch size
    S: sequence length
    D: model dimension (n_embd)
    H: number of attention heads (n_head)
    HD: dimension of one head (D // H)
    V: vocabulary size
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import FloatTensor, LongTensor

from utils import count_params


class MultiHeadAttention(nn.Module):
    """Masked multi-head self-attention."""

    def __init__(self, n_embd: int, n_head: int, p_dropout: float = 0.1):
        super().__init__()
        assert n_embd % n_head == 0, f"n_embd={n_embd} is not divisible by n_head={n_head}"
        self.n_embd = n_embd
        self.n_head = n_head
        self.head_dim = n_embd // n_head

        self.q_attn = nn.Linear(n_embd, n_embd)
        self.k_attn = nn.Linear(n_embd, n_embd)
        self.v_attn = nn.Linear(n_embd, n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = nn.Dropout(p_dropout)

        # 1 / sqrt(HD): keeps the attention logits at unit scale whatever the head size
        scale_factor = 1 / torch.sqrt(torch.tensor(self.head_dim, dtype=torch.float))
        self.register_buffer("scale_factor", scale_factor)

    def q_kT_v(self, x: FloatTensor) -> tuple[FloatTensor, FloatTensor, FloatTensor]:
        """Project x (B x S x D) to the queries q (B x H x S x HD),
        the transposed keys kT (B x H x HD x S) and the values v (B x H x S x HD)."""
        # TODO: project x with q_attn, k_attn, v_attn and split the heads
        # BEGIN SOLUTION
        B, S, _ = x.shape
        q = self.q_attn(x).view(B, S, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, S, HD)
        k = self.k_attn(x).view(B, S, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, S, HD)
        v = self.v_attn(x).view(B, S, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, S, HD)
        return q, k.transpose(2, 3), v
        # END SOLUTION

    def self_attention(
        self,
        q: FloatTensor,
        kT: FloatTensor,
        v: FloatTensor,
        attention_mask: FloatTensor | None = None,
    ) -> FloatTensor:
        """Causal scaled dot-product attention over all heads at once.

        q (B x H x S x HD), kT (B x H x HD x S), v (B x H x S x HD); attention_mask (B x S) holds
        1.0 for real tokens and 0.0 for padding. Returns the heads merged back: (B x S x D).
        """
        # TODO: causal mask (S x S) combined with attention_mask into (B x 1 x S x S); fill masked
        # logits with torch.finfo(q.dtype).min; softmax, dropout, weighted sum of v; merge the heads
        # BEGIN SOLUTION
        S = q.shape[-2]
        # query i may attend to key j only when j <= i
        mask = torch.ones(S, S, dtype=torch.bool, device=q.device).tril()  # (S, S)
        mask = mask[None, None]  # (1, 1, S, S)
        if attention_mask is not None:
            # and never to a padding key
            key_is_token = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
            mask = mask & key_is_token  # (B, 1, S, S)

        attn_logits = (q @ kT) * self.scale_factor  # (B, H, S, S)
        # the dtype's minimum rather than -inf: a fully padded query row then softmaxes to a
        # uniform average instead of NaN (its output is never used)
        attn_logits = attn_logits.masked_fill(~mask, torch.finfo(attn_logits.dtype).min)
        attn_weights = self.dropout(attn_logits.softmax(dim=-1))  # (B, H, S, S)
        attn = attn_weights @ v  # (B, H, S, HD)
        return rearrange(attn, "b h s hd -> b s (h hd)")  # (B, S, D)
        # END SOLUTION

    def projection(self, attn: FloatTensor) -> FloatTensor:
        """Output projection of the merged heads (B x S x D) -> (B x S x D)."""
        return self.dropout(self.proj(attn))

    def forward(self, x: FloatTensor, attention_mask: FloatTensor | None = None) -> FloatTensor:
        """x (B x S x D), attention_mask (B x S) -> (B x S x D)."""
        # TODO: q_kT_v, self_attention, projection
        # BEGIN SOLUTION
        q, kT, v = self.q_kT_v(x)
        return self.projection(self.self_attention(q, kT, v, attention_mask))
        # END SOLUTION


class FeedForward(nn.Module):
    """Position-wise feed-forward network with a GeLU non-linearity."""

    def __init__(self, n_embd: int, p_dropout: float = 0.1):
        super().__init__()
        self.linear_in = nn.Linear(n_embd, 4 * n_embd)
        self.linear_out = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(p_dropout)

    def forward(self, x: FloatTensor) -> FloatTensor:
        """x (B x S x D) -> (B x S x D)."""
        # TODO: linear_in, GeLU, linear_out, dropout
        # BEGIN SOLUTION
        return self.dropout(self.linear_out(F.gelu(self.linear_in(x))))
        # END SOLUTION


class DecoderBlock(nn.Module):
    """One transformer decoder block: masked self-attention, then feed-forward, each with a
    residual connection and a layer norm (pre-LN and post-LN placements are both accepted)."""

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.mha = MultiHeadAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.ff = FeedForward(n_embd)

    def forward(self, x: FloatTensor, attention_mask: FloatTensor) -> FloatTensor:
        """x (B x S x D), attention_mask (B x S) or None -> (B x S x D)."""
        # TODO: attention and feed-forward sub-layers, each with a residual connection and a layer norm
        # BEGIN SOLUTION
        # pre-LN (GPT-2): normalise the input of each sub-layer, keep the residual stream raw
        x = x + self.mha(self.ln_1(x), attention_mask)
        x = x + self.ff(self.ln_2(x))
        return x
        # END SOLUTION


class DecoderLM(nn.Module):
    """The decoder-only language model: embeddings, n_layer decoder blocks, tied output layer."""

    def __init__(
        self,
        n_vocab: int,
        n_embd: int,
        n_head: int,
        n_positions: int,
        n_layer: int,
        p_dropout: float = 0.1,
    ):
        super().__init__()
        self.n_vocab = n_vocab
        self.n_embd = n_embd
        self.n_head = n_head
        self.n_positions = n_positions
        self.n_layer = n_layer
        self.p_dropout = p_dropout

        self.token_embeddings = nn.Embedding(n_vocab, n_embd)
        self.position_embeddings = nn.Embedding(n_positions, n_embd)
        self.blocks = nn.ModuleList([DecoderBlock(n_embd, n_head) for _ in range(n_layer)])
        self.ln = nn.LayerNorm(n_embd)
        self.dropout = nn.Dropout(p_dropout)

        # initialise the weights as nanoGPT does
        self.apply(self._init_weights)
        # nanoGPT also shrinks the residual projections by 1/sqrt(2 * n_layer); it finds them by
        # the name "c_proj", which no parameter here has, so (as in the course's starter) every
        # linear layer keeps std 0.02
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

        # training FLOPs per token as nanoGPT counts them: 6 per parameter (forward + backward)
        # plus the attention score and weighted-sum matmuls over n_positions keys
        self.flops_per_token = 6 * count_params(self) + 12 * n_layer * n_embd * n_positions

    def embed(self, input_ids: LongTensor, attention_mask: FloatTensor | None = None) -> FloatTensor:
        """Token plus position embeddings of input_ids (B x S) -> (B x S x D).

        Positions count real tokens only: with left padding, the first real token of every row
        gets position 0 (mask [0, 0, 1, 1, 1] -> positions [0, 0, 0, 1, 2]).
        """
        assert input_ids.shape[1] <= self.n_positions, (
            f"sequence length {input_ids.shape[1]} exceeds n_positions={self.n_positions}"
        )
        # TODO: token embeddings plus position embeddings (positions from cumsum(attention_mask) - 1,
        # clamped into [0, n_positions)), then dropout
        # BEGIN SOLUTION
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        position_ids = attention_mask.long().cumsum(dim=1) - 1  # (B, S)
        position_ids = position_ids.clamp(0, self.n_positions - 1)  # pads before the 1st token -> 0
        x = self.token_embeddings(input_ids) + self.position_embeddings(position_ids)  # (B, S, D)
        return self.dropout(x)
        # END SOLUTION

    def token_logits(self, x: FloatTensor) -> FloatTensor:
        """Project hidden states x (B x S x D) to token logits (B x S x V) by weight tying."""
        # TODO: one line with the token embedding matrix (weight tying, handout Q1.2)
        # BEGIN SOLUTION
        return x @ self.token_embeddings.weight.T  # (B, S, D) @ (D, V) -> (B, S, V)
        # END SOLUTION

    def forward(self, input_ids: LongTensor, attention_mask: FloatTensor | None = None) -> FloatTensor:
        """input_ids (B x S), attention_mask (B x S) -> logits (B x S x V)."""
        # TODO: embed, the decoder blocks, the final layer norm, token_logits
        # BEGIN SOLUTION
        x = self.embed(input_ids, attention_mask)  # (B, S, D)
        for block in self.blocks:
            x = block(x, attention_mask)
        return self.token_logits(self.ln(x))  # (B, S, V)
        # END SOLUTION

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
