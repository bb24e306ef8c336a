"""Write the IFT6135 A2 mutants (known-buggy submissions) and correct alternatives from the reference.

Each mutant is a textual edit of a reference file (a few edits at most);
`tests/mutants/mila_ift6135_a2/<name>/` gets the edited file and a one-line MUTANT.md. An
alternative is a correct solution written another way the handout allows;
`tests/alternatives/mila_ift6135_a2/<name>/` gets the edited file and a one-line ALTERNATIVE.md.
Regenerate after changing the reference:

    python -m tools.mila_ift6135_a2.make_mutants
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "reference" / "mila_ift6135_a2"
MUTANTS = ROOT / "tests" / "mutants" / "mila_ift6135_a2"
ALTERNATIVES = ROOT / "tests" / "alternatives" / "mila_ift6135_a2"

LSTM, GPT1 = "lstm_solution.py", "gpt1_solution.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    description: str
    more: tuple[tuple[str, str], ...] = ()  # further (old, new) edits of the same file


LOSS_PER_SEQUENCE = "nll_per_sequence = -(target_log_probas * mask).sum(dim=1) / mask.sum(dim=1)  # (B,)"
LN_VARIANCE = "variance = ((inputs - mean) ** 2).mean(dim=-1, keepdim=True)  # biased, (*dims, 1)"
LN_NORMALISE = "normalised = (inputs - mean) / torch.sqrt(variance + self.eps)"
LN_RETURN = "return normalised * self.weight + self.bias"

MUTATIONS = [
    # -- LayerNorm
    Mutant("ln_unbiased_variance", GPT1, LN_VARIANCE,
           "variance = inputs.var(dim=-1, keepdim=True)",
           "LayerNorm uses torch.var's default unbiased variance (divides by n - 1)."),
    Mutant("ln_eps_outside_sqrt", GPT1, LN_NORMALISE,
           "normalised = (inputs - mean) / (torch.sqrt(variance) + self.eps)",
           "LayerNorm adds eps outside the square root."),
    Mutant("ln_no_affine", GPT1, LN_RETURN, "return normalised",
           "LayerNorm forgets the learned weight and bias."),
    Mutant("ln_nn_layernorm", GPT1, LN_RETURN,
           "builtin = nn.LayerNorm(self.hidden_size, eps=self.eps)\n"
           "        builtin.weight, builtin.bias = self.weight, self.bias\n"
           "        return builtin(inputs)",
           "LayerNorm delegates to nn.LayerNorm, which the handout forbids."),
    Mutant("ln_getattr_alias", GPT1, LN_RETURN,
           'return getattr(torch.nn.functional, "layer_" + "norm")(\n'
           "            inputs, (self.hidden_size,), self.weight, self.bias, self.eps\n"
           "        )",
           "LayerNorm reaches F.layer_norm through a getattr alias (forbidden)."),
    # -- split / merge heads
    Mutant("split_heads_no_transpose", GPT1,
           "output = tensor.reshape(batch_size, sequence_length, self.num_heads, -1)  # (B, S, H, dim)\n"
           "        return output.transpose(1, 2)  # (B, H, S, dim)",
           "return tensor.reshape(batch_size, self.num_heads, sequence_length, -1)",
           "split_heads reshapes straight to (B, H, S, dim) without the transpose."),
    Mutant("merge_heads_not_inverse", GPT1,
           "output = tensor.transpose(1, 2)  # (B, S, H, dim)",
           "output = tensor",
           "merge_heads flattens without swapping the axes back: not the inverse of split_heads."),
    # -- attention weights
    Mutant("attn_no_causal_mask", GPT1,
           "        scores = scores * s - 1e4 * (1 - s)\n", "",
           "get_attention_weights applies no causal mask."),
    Mutant("attn_mask_transposed", GPT1,
           "s = torch.tril(s)", "s = torch.triu(s)",
           "The causal mask is transposed: positions attend to the future."),
    Mutant("attn_mask_zero_not_minus_1e4", GPT1,
           "scores = scores * s - 1e4 * (1 - s)", "scores = scores * s",
           "Masked logits are set to 0 instead of -1e4, so the future still gets weight."),
    Mutant("attn_softmax_wrong_axis", GPT1,
           "return torch.softmax(scores, dim=-1)", "return torch.softmax(scores, dim=-2)",
           "The softmax runs over the query axis instead of the key axis."),
    Mutant("attn_scale_by_d_model", GPT1,
           "/ math.sqrt(self.head_size)", "/ math.sqrt(self.num_heads * self.head_size)",
           "The dot products are scaled by sqrt(num_heads * head_size) instead of sqrt(head_size)."),
    Mutant("apply_attention_weights_transposed", GPT1,
           "attended = weights @ values", "attended = weights.transpose(-2, -1) @ values",
           "apply_attention multiplies the values by the transposed weights."),
    # -- attention forward
    Mutant("out_proj_no_bias", GPT1,
           "self.out_proj = nn.Linear(embedding_size, embedding_size)",
           "self.out_proj = nn.Linear(embedding_size, embedding_size, bias=False)",
           "The output projection has no bias."),
    Mutant("keys_from_value_projection", GPT1,
           "keys = self.split_heads(self.k_proj(hidden_states))",
           "keys = self.split_heads(self.v_proj(hidden_states))",
           "forward computes the keys with the value projection."),
    # -- MiniGPT1
    Mutant("gpt_embeddings_no_positions", GPT1,
           "return self.embedding(inputs, positions)  # (B, S, E)",
           "return self.embedding.tokens(inputs)  # (B, S, E)",
           "get_embeddings leaves out the position embeddings."),
    Mutant("gpt_returns_logits", GPT1,
           "return F.log_softmax(logits, dim=-1)\n        # END SOLUTION\n\n    def loss",
           "return logits\n        # END SOLUTION\n\n    def loss",
           "MiniGPT1.forward returns logits instead of log-probabilities."),
    Mutant("gpt_first_layer_only", GPT1,
           "for layer in self.layers:", "for layer in self.layers[:1]:",
           "MiniGPT1.forward runs only the first layer."),
    Mutant("gpt_loss_global_token_mean", GPT1, LOSS_PER_SEQUENCE,
           "return -(target_log_probas * mask).sum() / mask.sum()",
           "MiniGPT1.loss is one mean over all real tokens of the batch."),
    # -- LSTM
    Mutant("lstm_returns_logits", LSTM,
           "return F.log_softmax(logits, dim=-1), hidden_states",
           "return logits, hidden_states",
           "LSTM.forward returns logits instead of log-probabilities."),
    Mutant("lstm_ignores_initial_state", LSTM,
           "outputs, hidden_states = self.lstm(embeddings, hidden_states)",
           "outputs, hidden_states = self.lstm(embeddings)",
           "LSTM.forward starts from zeros instead of the given hidden_states."),
    Mutant("lstm_returns_initial_state", LSTM,
           "outputs, hidden_states = self.lstm(embeddings, hidden_states)",
           "outputs, _ = self.lstm(embeddings, hidden_states)",
           "LSTM.forward returns the initial state instead of the final one."),
    Mutant("lstm_loss_over_padding", LSTM, LOSS_PER_SEQUENCE,
           "nll_per_sequence = -target_log_probas.mean(dim=1)  # (B,)",
           "LSTM.loss averages over padded positions too."),
    Mutant("lstm_loss_global_token_mean", LSTM, LOSS_PER_SEQUENCE,
           "return -(target_log_probas * mask).sum() / mask.sum()",
           "LSTM.loss is one mean over all real tokens of the batch."),
    # -- rules the grading parent now enforces itself (issue #13)
    Mutant("ln_modifies_input_in_place", GPT1, LN_NORMALISE,
           "normalised = inputs.sub_(mean).div_(torch.sqrt(variance + self.eps))",
           "LayerNorm normalises its input in place: right values, but the caller's tensor is changed."),
    Mutant("ln_parameters_detached", GPT1, LN_RETURN,
           "return normalised * self.weight.detach() + self.bias.detach()",
           "LayerNorm detaches weight and bias: right values, but no gradient reaches them."),
    Mutant("lstm_loss_not_differentiable", LSTM,
           "return nll_per_sequence.mean()",
           "return torch.tensor(nll_per_sequence.mean().item())",
           "LSTM.loss goes through .item(): right value, but no gradient reaches log_probas."),
    Mutant("gpt_loss_detached", GPT1,
           "return nll_per_sequence.mean()\n        # END SOLUTION\n\n    @classmethod",
           "return nll_per_sequence.mean().detach()\n        # END SOLUTION\n\n    @classmethod",
           "MiniGPT1.loss detaches its result: right value, but no gradient reaches log_probas."),
    Mutant("attn_mask_excludes_self", GPT1,
           "s = torch.tril(s)", "s = torch.tril(s, diagonal=-1)",
           "The causal mask also hides the diagonal: position 0 attends to nothing, so to everything."),
    Mutant("split_heads_interleaved", GPT1,
           "output = tensor.reshape(batch_size, sequence_length, self.num_heads, -1)  # (B, S, H, dim)\n"
           "        return output.transpose(1, 2)  # (B, H, S, dim)",
           "output = tensor.reshape(batch_size, sequence_length, -1, self.num_heads)  # (B, S, dim, H)\n"
           "        return output.permute(0, 3, 1, 2)  # (B, H, S, dim)",
           "split_heads/merge_heads interleave the heads (x[b, s, d * H + h]), consistently with each other.",
           more=((("output = tensor.transpose(1, 2)  # (B, S, H, dim)\n"
                  "        return output.reshape(batch_size, sequence_length, num_heads * dim)  # (B, S, H * dim)"),
                  ("output = tensor.permute(0, 2, 3, 1)  # (B, S, dim, H)\n"
                  "        return output.reshape(batch_size, sequence_length, num_heads * dim)  # (B, S, H * dim)")),)),
    Mutant("mha_no_output_projection", GPT1,
           "return self.out_proj(attended)  # (B, S, E)",
           "return attended  # (B, S, E)",
           "MultiHeadedAttention.forward defines the output projection but never applies it."),
    Mutant("gpt_log_softmax_over_positions", GPT1,
           "return F.log_softmax(logits, dim=-1)\n        # END SOLUTION\n\n    def loss",
           "return F.log_softmax(logits, dim=1)\n        # END SOLUTION\n\n    def loss",
           "MiniGPT1.forward normalises over the positions instead of the vocabulary (and so sees the future)."),
]

QKV_INIT = (
    "self.q_proj = nn.Linear(embedding_size, embedding_size)\n"
    "        self.k_proj = nn.Linear(embedding_size, embedding_size)\n"
    "        self.v_proj = nn.Linear(embedding_size, embedding_size)\n"
    "        self.out_proj = nn.Linear(embedding_size, embedding_size)"
)
QKV_FORWARD = (
    "queries = self.split_heads(self.q_proj(hidden_states))  # (B, H, S, hd)\n"
    "        keys = self.split_heads(self.k_proj(hidden_states))  # (B, H, S, hd)\n"
    "        values = self.split_heads(self.v_proj(hidden_states))  # (B, H, S, hd)"
)

# Correct solutions written another way the handout allows: each must get full marks.
ALTERNATIVE_SOLUTIONS = [
    Mutant("get_embeddings_full_length_only", GPT1,
           "positions = torch.arange(sequence_length, device=inputs.device)  # (S,)",
           "positions = torch.arange(self.sequence_length, device=inputs.device)  # (S,)",
           "get_embeddings builds positions 0 .. self.sequence_length - 1: only full-length inputs, "
           "the only ones the handout uses."),
    Mutant("mha_fused_qkv", GPT1, QKV_INIT,
           "self.qkv = nn.Linear(embedding_size, 3 * embedding_size)\n"
           "        self.out_proj = nn.Linear(embedding_size, embedding_size)",
           "One fused nn.Linear(d, 3d) for the queries, keys and values, read as three blocks.",
           more=((QKV_FORWARD,
                  "queries, keys, values = (self.split_heads(p) for p in self.qkv(hidden_states).chunk(3, dim=-1))"),)),
    Mutant("mha_fused_qkv_per_head", GPT1, QKV_INIT,
           "self.qkv = nn.Linear(embedding_size, 3 * embedding_size)\n"
           "        self.out_proj = nn.Linear(embedding_size, embedding_size)",
           "One fused nn.Linear(d, 3d) whose output holds (query, key, value) for each head in turn.",
           more=((QKV_FORWARD,
                  ("batch_size, sequence_length, _ = hidden_states.shape\n"
                  "        packed = self.qkv(hidden_states).reshape(batch_size, sequence_length, self.num_heads, 3, -1)\n"
                  "        queries, keys, values = (packed[:, :, :, i].transpose(1, 2) for i in range(3))")),)),
    Mutant("mha_raw_parameters", GPT1, QKV_INIT,
           "self.weights = nn.ParameterList(\n"
           "            [nn.Parameter(0.02 * torch.randn(embedding_size, embedding_size)) for _ in range(4)]\n"
           "        )\n"
           "        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(embedding_size)) for _ in range(4)])",
           "Projections as raw (in, out) matrices, x @ W + b, all weights registered before the biases.",
           more=((QKV_FORWARD,
                  ("queries, keys, values = (\n"
                  "            self.split_heads(hidden_states @ w + b) for w, b in zip(self.weights[:3], self.biases[:3])\n"
                  "        )")),
                 ("return self.out_proj(attended)  # (B, S, E)",
                  "return attended @ self.weights[3] + self.biases[3]  # (B, S, E)"))),
    Mutant("mha_projections_other_order", GPT1, QKV_INIT,
           "self.out_proj = nn.Linear(embedding_size, embedding_size)\n"
           "        self.v_proj = nn.Linear(embedding_size, embedding_size)\n"
           "        self.q_proj = nn.Linear(embedding_size, embedding_size)\n"
           "        self.k_proj = nn.Linear(embedding_size, embedding_size)",
           "The four projections are registered in another order (output, value, query, key)."),
    Mutant("attn_masked_fill_minus_inf", GPT1,
           "scores = scores * s - 1e4 * (1 - s)",
           'scores = scores.masked_fill(s == 0, float("-inf"))',
           "The causal mask fills future logits with -inf instead of x * s - 1e4 * (1 - s)."),
]


def _write(edits: list[Mutant], out: Path, note: str) -> list[str]:
    if out.exists():
        shutil.rmtree(out)
    for mutant in edits:
        text = (REFERENCE / mutant.file).read_text(encoding="utf-8")
        for old, new in ((mutant.old, mutant.new), *mutant.more):
            count = text.count(old)
            if count != 1:
                raise ValueError(f"{mutant.name}: the edited text occurs {count} times in {mutant.file}")
            text = text.replace(old, new)
        folder = out / mutant.name
        folder.mkdir(parents=True)
        (folder / mutant.file).write_text(text, encoding="utf-8")
        (folder / note).write_text(mutant.description + "\n", encoding="utf-8")
    return [m.name for m in edits]


def write_mutants(out: Path = MUTANTS) -> list[str]:
    return _write(MUTATIONS, out, "MUTANT.md")


def write_alternatives(out: Path = ALTERNATIVES) -> list[str]:
    return _write(ALTERNATIVE_SOLUTIONS, out, "ALTERNATIVE.md")


def main(argv: list[str] | None = None) -> int:
    names = write_mutants()
    print(f"wrote {len(names)} mutants to {MUTANTS.relative_to(ROOT)}")
    names = write_alternatives()
    print(f"wrote {len(names)} alternatives to {ALTERNATIVES.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
