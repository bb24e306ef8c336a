"""Shared fixtures of the CMU 11-667 A2 suite: the offline tokenizer, deterministic weights, and
a small mask-aware stand-in language model.

The stand-in (`toy_lm`) lets the generate/classify tests grade generate.py and classify.py on
their own: its outputs depend on the attention mask exactly as a correct DecoderLM's do (padding
contributes nothing, positions count real tokens), so a wrong padding side or a missing mask
changes its predictions, while a bug in the student's model.py cannot cost generate points.
"""

import base64
from pathlib import Path

import pytest
import tiktoken
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from grader.seeding import fill_parameters

TOKENIZER_FILE = Path("tokenizer") / "fixture_bpe.tiktoken"
# GPT-2's pre-tokenisation regex, as tiktoken's "gpt2" encoding uses it
GPT2_PAT_STR = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)


def load_fixture_tokenizer(fixtures: Path) -> tiktoken.Encoding:
    """The suite's stand-in for tiktoken's gpt2: a ~1000-token byte-level BPE, eot = last id."""
    ranks = {}
    for line in (Path(fixtures) / TOKENIZER_FILE).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name="lmgrade_fixture_bpe",
        pat_str=GPT2_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": len(ranks)},
    )


@pytest.fixture
def tokenizer(sub) -> tiktoken.Encoding:
    return load_fixture_tokenizer(sub.fixtures)


def undecodable_tokens(tokenizer: tiktoken.Encoding) -> list[int]:
    """Token ids whose bytes are not valid UTF-8 on their own (pieces of multi-byte characters)."""
    bad = []
    for token in range(tokenizer.n_vocab):
        try:
            tokenizer.decode_single_token_bytes(token).decode("utf-8")
        except (UnicodeDecodeError, KeyError):
            bad.append(token)
    return bad


class ToyLM(nn.Module):
    """A mask-aware stand-in for DecoderLM: logits (B x S x V) at position t come from the mean
    embedding of the real tokens up to t, the embedding of token t itself, and the embedding of
    t's position, where positions count real tokens only (as DecoderLM.embed does). Padding keys
    contribute exactly nothing, so a left-padded row gives bit-for-bit the logits of the same
    row alone, while the prediction at a pad position (right padding) is a different one.

    `banned` token ids get a large negative logit: the suite bans byte fragments, so that every
    continuation decodes to the same string however the student decodes it, and end-of-text,
    so that a generate() that stops at eot is not penalised.
    """

    def __init__(
        self,
        n_vocab: int,
        n_embd: int = 16,
        n_positions: int = 64,
        seed: int = 0,
        banned: list[int] = (),
        fixed_logits: torch.Tensor | None = None,
    ):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.n_vocab, self.n_positions = n_vocab, n_positions
        self.token_embeddings = nn.Parameter(torch.randn(n_vocab, n_embd, generator=gen))
        self.position_embeddings = nn.Parameter(torch.randn(n_positions, n_embd, generator=gen))
        self.out = nn.Parameter(2 * torch.randn(n_embd, n_vocab, generator=gen) / n_embd**0.5)
        bias = torch.zeros(n_vocab)
        bias[list(banned)] = -1e4
        self.register_buffer("bias", bias)
        # when given, every position predicts these logits (for sampling tests)
        self.register_buffer("fixed_logits", fixed_logits)
        self.calls = 0

    def forward(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.calls += 1
        B, S = input_ids.shape
        assert S <= self.n_positions, f"sequence length {S} exceeds n_positions={self.n_positions}"
        if attention_mask is None:
            attention_mask = torch.ones(B, S, device=input_ids.device)
        mask = attention_mask.float()  # (B, S)
        if self.fixed_logits is not None:
            return self.fixed_logits.expand(B, S, self.n_vocab).clone()
        n_real = mask.cumsum(dim=1)  # (B, S)
        positions = (n_real - 1).clamp(min=0).long()  # (B, S)
        summed = (self.token_embeddings[input_ids] * mask[..., None]).cumsum(dim=1)  # (B, S, D)
        # like a transformer's residual stream, position t always sees its own token, even a pad:
        # so the last position of a right-padded row is a pad's prediction, as in DecoderLM
        own = self.token_embeddings[input_ids]  # (B, S, D)
        context = summed / n_real.clamp(min=1)[..., None]  # (B, S, D)
        hidden = torch.tanh(context + own + self.position_embeddings[positions])
        return hidden @ self.out + self.bias  # (B, S, V)


@pytest.fixture
def toy_lm(tokenizer):
    """Factory: toy_lm(seed=..., **kwargs) -> a ToyLM over the fixture tokenizer's vocabulary."""
    # byte fragments (decoding them alone or together differs) and eot (a student may stop there)
    banned = undecodable_tokens(tokenizer) + [tokenizer.eot_token]

    def make(seed: int = 0, **kwargs) -> ToyLM:
        kwargs.setdefault("banned", banned)
        return ToyLM(tokenizer.n_vocab, seed=seed, **kwargs).eval()

    return make


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists to (B x S) ids and a (B x S) float mask (1.0 on real tokens)."""
    S = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (S - len(r)) + r for r in rows])
    mask = torch.tensor([[0.0] * (S - len(r)) + [1.0] * len(r) for r in rows])
    return ids, mask


@pytest.fixture
def fill_params():
    """fill_params(model, seed=0) -> model, with name-determined parameter values."""
    return fill_parameters


@pytest.fixture
def pad_left():
    """pad_left(rows, pad_id) -> (ids, mask), left-padded."""
    return left_pad


def device_mixing_mode():
    """A dispatch mode recording the operations that combine tensors on two devices (0-dim CPU
    tensors aside, as CUDA allows them too). Run with the model and its inputs on torch's
    ``meta`` device, it finds what a GPU would refuse, on a machine without one: a causal mask or
    position ids built on the CPU and combined with the inputs. (Built on first use: importing
    torch's dispatch modes imports torch._dynamo, a second the public tests need not pay.)"""
    from torch.utils._python_dispatch import TorchDispatchMode

    class DeviceMixing(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            devices = {
                leaf.device.type
                for leaf in tree_leaves((args, kwargs or {}))
                if isinstance(leaf, torch.Tensor) and leaf.dim() > 0
            }
            if len(devices) > 1:
                self.ops.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    return DeviceMixing


@pytest.fixture
def device_mixing():
    """with device_mixing() as seen: ...; seen.ops lists the operations that mixed devices."""
    return device_mixing_mode()


@pytest.fixture
def wandb_disabled():
    """The course's train() and evaluate() call wandb.log unconditionally; its own test_train
    calls wandb.init(mode="disabled") first, and so do the tests that run them here."""
    try:
        import wandb
    except ImportError:  # a submission that logs nothing needs no wandb
        yield
        return
    run = wandb.init(mode="disabled")
    try:
        yield
    finally:
        run.finish()
