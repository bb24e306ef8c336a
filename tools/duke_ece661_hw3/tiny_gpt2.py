"""A tiny GPT-2 in Hugging Face format, standing in for "gpt2" in Duke ECE 661 HW3 Lab (2).

The lab loads `AutoModelForCausalLM.from_pretrained("gpt2")` and its tokenizer from the Hub,
which may not be reached here. This module writes a folder that the same calls load offline:
a byte-level BPE tokenizer (GPT-2's pre-tokenizer and decoder, 512 tokens, `<|endoftext|>` as
bos/eos/unk like GPT-2) learned with `tokenizers` on the synthetic WikiText train split, a
2-layer GPT2Config, and seeded random weights in `model.safetensors` (about 0.2 MB).

    python -m tools.duke_ece661_hw3.tiny_gpt2 OUT_DIR --text wiki.train.raw [--seed 0]
"""

import argparse
from pathlib import Path

EOT = "<|endoftext|>"
CONFIG = {"n_positions": 256, "n_embd": 32, "n_layer": 2, "n_head": 2}  # GPT-2's dropout 0.1 kept


def train_tokenizer(text_files, vocab_size: int = 512):
    """A GPT-2-style byte-level BPE learned on the given files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(f) for f in text_files], trainer)
    return tok


def write_tiny_gpt2(out_dir, text_files, seed: int = 0) -> None:
    """config.json, tokenizer files and model.safetensors under out_dir."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    out_dir = Path(out_dir)
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=train_tokenizer(text_files), bos_token=EOT, eos_token=EOT, unk_token=EOT
    )
    eot = tokenizer.convert_tokens_to_ids(EOT)
    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=eot, eos_token_id=eot, **CONFIG)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "model.safetensors").chmod(0o644)  # safetensors writes 0600; graders read as another user


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--text", nargs="+", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_tiny_gpt2(args.out_dir, args.text, args.seed)


if __name__ == "__main__":
    main()
