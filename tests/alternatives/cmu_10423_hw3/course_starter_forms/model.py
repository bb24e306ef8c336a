"""GPT-2 with LoRA on the attention projections (HW3 section 2, "LoRA for Transformer LMs").

The vanilla transformer of HW1 (learned positions, no GQA, no RoPE), nanoGPT style. LoRA goes
on the fused query/key/value projection `c_attn` and on the output projection `c_proj` of every
attention layer; the MLP stays a plain linear stack.
"""

import inspect
import math
from dataclasses import dataclass

import torch
from lora import LoRALinear
from torch import nn
from torch.nn import functional as F


def new_gelu(x):
    """GELU, tanh approximation, as in GPT-2."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (nn.LayerNorm cannot drop only the bias)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        lora_args = {"lora_rank": config.lora_rank, "lora_alpha": config.lora_alpha,
                     "lora_dropout": config.lora_dropout}
        # TODO: the query, key and value projections for all heads, in one LoRALinear
        # (n_embd -> 3 * n_embd), LoRA settings from the config
        # BEGIN SOLUTION: self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_attn = LoRALinear(config.n_embd, 3 * config.n_embd, bias=config.bias, **lora_args)
        # END SOLUTION
        # TODO: the output projection as a LoRALinear (n_embd -> n_embd)
        # BEGIN SOLUTION: self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj = LoRALinear(config.n_embd, config.n_embd, bias=config.bias, **lora_args)
        # END SOLUTION
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x):
        B, T, C = x.size()  # batch size, sequence length, embedding dimensionality (n_embd)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, nh, T, hs) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(new_gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # bias in Linears and LayerNorms, like GPT-2
    lora_rank: int = 0  # 0: no LoRA, every LoRALinear is a plain nn.Linear
    lora_alpha: float = 0.0
    lora_dropout: float = 0.05


# n_layer, n_head and n_embd of the released GPT-2 checkpoints
GPT2_SIZES = {
    "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768},  # 124M params
    "gpt2-medium": {"n_layer": 24, "n_head": 16, "n_embd": 1024},  # 350M params
    "gpt2-large": {"n_layer": 36, "n_head": 20, "n_embd": 1280},  # 774M params
    "gpt2-xl": {"n_layer": 48, "n_head": 25, "n_embd": 1600},  # 1558M params
}


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None
        assert config.block_size is not None
        self.config = config
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, config.n_embd),
            "wpe": nn.Embedding(config.block_size, config.n_embd),
            "drop": nn.Dropout(config.dropout),
            "h": nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            "ln_f": LayerNorm(config.n_embd, bias=config.bias),
        })
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)
        # scaled init of the residual projections, per the GPT-2 paper
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def get_num_params(self, non_embedding=True):
        """Number of parameters; the position embeddings are left out by default (the token
        embeddings stay in: they are shared with lm_head)."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def _init_weights(self, module):
        # a LoRALinear is an nn.Linear: W0 and b are drawn here, A and B keep their LoRA init
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        t = idx.size(1)
        assert t <= self.config.block_size, f"Cannot forward sequence of length {t}, block size is only {self.config.block_size}"
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)  # (t,)
        tok_emb = self.transformer.wte(idx)  # (b, t, n_embd)
        pos_emb = self.transformer.wpe(pos)  # (t, n_embd)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)  # (b, t, vocab)
            # targets of -1 (padding) do not count
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            # inference: only the last position is needed
            logits = self.lm_head(x[:, [-1], :])  # (b, 1, vocab)
            loss = None
        return logits, loss

    def crop_block_size(self, block_size):
        """Shrink the context length (e.g. a 1024-position checkpoint used at 256)."""
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    @classmethod
    def from_pretrained(cls, model_type, override_args=None):
        """Load GPT-2 weights by model type, as the course's nanoGPT does: the size comes from
        the name, the weights from the Hugging Face hub. Only dropout and the lora_* settings
        may be overridden; LoRA matrices keep their fresh initialisation."""
        assert model_type in {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}
        override_args = override_args or {}
        assert all(k == "dropout" or k.startswith("lora") for k in override_args), override_args
        from transformers import GPT2LMHeadModel

        config_args = dict(GPT2_SIZES[model_type], vocab_size=50257, block_size=1024, bias=True)
        config_args.update(override_args)
        config = GPTConfig(**config_args)
        model = GPT(config)
        model_hf = GPT2LMHeadModel.from_pretrained(model_type)
        sd = model.state_dict()
        sd_hf = {k: v for k, v in model_hf.state_dict().items()
                 if not k.endswith((".attn.masked_bias", ".attn.bias"))}  # causal-mask buffers
        # LoRA adds A and B to c_attn and c_proj of every layer; the checkpoint has neither
        n_lora = 4 * config.n_layer if config.lora_rank > 0 else 0
        assert len(sd_hf) == len(sd) - n_lora, (
            f"mismatched keys: the checkpoint has {len(sd_hf)} tensors, the model {len(sd)}, of which "
            f"{n_lora} should be LoRA matrices (lora_A and lora_B of c_attn and c_proj in every layer)")
        # OpenAI's checkpoints use Conv1D, which stores (in, out): transpose into nn.Linear's (out, in)
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        with torch.no_grad():
            for k, v in sd_hf.items():
                if k.endswith(transposed):
                    assert v.shape[::-1] == sd[k].shape, k
                    sd[k].copy_(v.t())
                else:
                    assert v.shape == sd[k].shape, k
                    sd[k].copy_(v)
        return model

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW over the trainable parameters; matrices decay, biases and norms do not."""
        params = [p for p in self.parameters() if p.requires_grad]
        optim_groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        use_fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        extra_args = {"fused": True} if use_fused else {}
        return torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, **extra_args)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Sample `max_new_tokens` tokens after the (b, t) LongTensor `idx`; returns (b, t + new).
        Call it in eval mode (model.eval())."""
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature  # (b, vocab)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("Inf")
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)  # (b, 1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx
