"""Tests of the CMU 11-667 A2 reference and its tools (not part of the graded suite): the
offline tokenizer, both layer-norm placements, the course's GPT-tiny numbers, and the scripts'
main() functions end to end on fixture data."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.cmu_11667_a2 import tokenizer as tok_tool

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "reference" / "cmu_11667_a2"
MODULES = ("utils", "model", "train", "generate", "classify")


@pytest.fixture
def reference(monkeypatch, tmp_path):
    """Import the reference's flat modules (pre-LN, or post-LN with variant="post_ln"), by the
    names the course uses; whatever held those names in sys.modules is restored afterwards."""
    import importlib

    saved = {name: sys.modules.pop(name) for name in MODULES if name in sys.modules}

    def load(variant: str | None = None):
        monkeypatch.syspath_prepend(str(REFERENCE))
        if variant:  # the variant's edits of variants.yaml, applied into a folder ahead of the reference
            from grader.mutants import load_edits, materialise

            edits = {v.name: v for v in load_edits(REFERENCE / "variants.yaml", "variant")}[variant]
            monkeypatch.syspath_prepend(str(materialise(edits, REFERENCE, tmp_path / variant)))
        mods = {name: importlib.import_module(name) for name in MODULES}
        for name in MODULES:  # the next load() imports afresh
            sys.modules.pop(name, None)
        return mods

    yield load
    for name in MODULES:
        sys.modules.pop(name, None)
    sys.modules.update(saved)


@pytest.fixture
def encoding():
    return tok_tool.load_encoding(prefer_gpt2=False)


def test_fixture_tokenizer_round_trips(encoding):
    corpus = (tok_tool.FIXTURE_DIR / tok_tool.TEXT_FILE).read_text()
    for text in (corpus, "Café – naïve 😀 déjà vu.\n\n  tabs\tand  spaces", "<|endoftext|> as text"):
        assert encoding.decode(encoding.encode(text, disallowed_special=())) == text
    assert encoding.eot_token == encoding.n_vocab - 1 == tok_tool.VOCAB_SIZE
    assert encoding.encode("<|endoftext|>", allowed_special="all") == [encoding.eot_token]
    for word in tok_tool.REQUIRED_TOKENS:
        assert len(encoding.encode(word)) == 1, f"{word!r} is not a single token"


def test_fixture_tokenizer_rebuilds_identically():
    corpus = (tok_tool.FIXTURE_DIR / tok_tool.TEXT_FILE).read_text()
    from tools.cmu_11667_a2.fixture_text import generate_text

    assert generate_text() == corpus, "the fixture text generator no longer reproduces corpus.txt"
    assert tok_tool.train_ranks(corpus) == tok_tool.read_ranks(tok_tool.FIXTURE_DIR / tok_tool.RANKS_FILE)


def test_load_encoding_never_downloads(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("load_encoding tried to download")

    monkeypatch.setattr("tiktoken.load.read_file", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert tok_tool.load_encoding().name == tok_tool.ENCODING_NAME
    for url in tok_tool.GPT2_FILES:  # present but corrupt: still not used
        import hashlib

        (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b"not the real file")
    assert not tok_tool.gpt2_is_cached()
    assert tok_tool.load_encoding().name == tok_tool.ENCODING_NAME


def filled(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / (p.shape[-1] ** 0.5 if p.dim() > 1 else 5))
    return model.eval()


@pytest.mark.parametrize("variant", [None, "post_ln"])
def test_layer_norm_variants_are_causal_and_ignore_padding(reference, variant):
    model_mod = reference(variant)["model"]
    model = filled(model_mod.DecoderLM(40, 16, 2, 12, 2))
    ids = torch.randint(40, (2, 8))
    logits = model(ids)
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 40
    assert torch.allclose(model(changed)[:, :5], logits[:, :5], atol=1e-6)
    mask = torch.ones(2, 8)
    mask[0, :3] = 0
    padded = model(ids, mask)
    assert torch.allclose(padded[0, 3:], model(ids[:1, 3:])[0], atol=1e-5)
    assert torch.isfinite(padded).all()


def test_pre_and_post_ln_really_differ(reference):
    pre, post = reference()["model"], reference("post_ln")["model"]
    assert pre.DecoderBlock is not post.DecoderBlock
    ids = torch.randint(40, (2, 8))
    a = filled(pre.DecoderLM(40, 16, 2, 12, 2))(ids)
    b = filled(post.DecoderLM(40, 16, 2, 12, 2))(ids)
    assert (a - b).abs().max() > 1e-2


def test_gpt_tiny_matches_the_course_numbers(reference):
    mods = reference()
    from omegaconf import OmegaConf

    config = OmegaConf.load(REFERENCE / "configs" / "GPT-tiny.yaml")
    model = mods["model"].DecoderLM(50257, **config.model_config)
    assert mods["utils"].count_params(model) == 1_637_792  # "about 2M parameters"
    assert model.flops_per_token == 9_925_056
    total = (
        model.flops_per_token
        * config.num_training_steps
        * config.grad_accumulation_steps
        * config.batch_size
        * config.seq_len
    )
    assert 8.0e13 < total < 8.2e13


def test_prefixes_file_has_five_prefixes():
    lines = (REFERENCE / "data" / "prefixes.jsonl").read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["prefix"] for line in lines)


def test_train_and_generate_mains_end_to_end(reference, encoding, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # wandb is installed (course environment); never log in
    mods = reference()
    for name in ("train", "generate"):
        monkeypatch.setattr(mods[name].tiktoken, "get_encoding", lambda _name: encoding)
    corpus = (tok_tool.FIXTURE_DIR / tok_tool.TEXT_FILE).read_text()[:20_000]
    tokens = np.array(encoding.encode(corpus), dtype=np.uint16)
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "tokens.npz", train=tokens[:-600], val=tokens[-600:])
    (tmp_path / "data" / "prefixes.jsonl").write_text((REFERENCE / "data" / "prefixes.jsonl").read_text())
    config = {
        "output_dir": str(tmp_path / "out"),
        "tokenizer_encoding": "gpt2",
        "device": "cpu",
        "model_config": {"n_embd": 16, "n_head": 2, "n_positions": 64, "n_layer": 1},
        "batch_size": 4,
        "seq_len": 32,
        "num_warmup_steps": 2,
        "num_training_steps": 6,
        "grad_accumulation_steps": 2,
        "min_lr": 1e-4,
        "max_lr": 1e-3,
    }
    (tmp_path / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py", "config.yaml"])
    mods["train"].main()
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert set(result) == {"val-loss", "val-perplexity"} and result["val-loss"] < np.log(encoding.n_vocab) + 0.5
    assert (tmp_path / "out" / "model.pt").is_file()

    monkeypatch.setattr(
        sys,
        "argv",
        ["generate.py", "--config", "out/config.yaml", "--prefixes", "data/prefixes.jsonl", "--max_new_tokens", "4"],
    )
    mods["generate"].main()
    records = [json.loads(line) for line in (tmp_path / "out" / "generation.jsonl").read_text().splitlines()]
    assert len(records) == 5 and all(set(r) == {"prefix", "generation"} for r in records)
