"""Project tests of the cmu_10423_hw3 reference itself (not of students).

- The reference LoRALinear computes what peft's LoRA layer computes, forward and backward.
- Merged (eval) and un-merged (train) layers agree; merge/un-merge gives W0 back.
- A few LoRA steps on the fixture's instruction data lower the loss of a tiny GPT-2.
- train.py and generate.py run end to end offline on a tiny local GPT-2 checkpoint.
- configurator.py reads config files and --key=value flags with the defaults' types.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "reference" / "cmu_10423_hw3"
FIXTURES = ROOT / "fixtures" / "cmu_10423_hw3"
MODULES = ("lora", "model", "dataloader", "configurator", "train", "generate")


@pytest.fixture(scope="module")
def ref():
    """The reference's modules, imported by their handout names and then taken out of
    sys.modules again, so other assignments' `model.py` etc. are not shadowed."""
    saved = {name: sys.modules.pop(name) for name in MODULES if name in sys.modules}
    sys.path.insert(0, str(REF))
    try:
        mods = {name: importlib.import_module(name) for name in MODULES}
    finally:
        sys.path.remove(str(REF))
        for name in MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    return type("Ref", (), mods)


class _Wrapper(nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        return self.lin(x)


def peft_twin(layer):
    """A peft LoRA layer with the same W0, b, A, B, r and alpha as the reference layer."""
    from peft import LoraConfig, get_peft_model

    rank = layer.lora_A.shape[0]
    base = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        base.weight.copy_(layer.weight)
        if layer.bias is not None:
            base.bias.copy_(layer.bias)
    model = get_peft_model(
        _Wrapper(base),
        LoraConfig(r=rank, lora_alpha=layer.lora_scaling * rank, target_modules=["lin"], lora_dropout=0.0),
    )
    twin = model.base_model.model.lin
    with torch.no_grad():
        twin.lora_A["default"].weight.copy_(layer.lora_A)
        twin.lora_B["default"].weight.copy_(layer.lora_B)
    return model, twin


@pytest.mark.parametrize(
    "in_f,out_f,rank,alpha,bias", [(16, 12, 4, 12.0, True), (32, 48, 8, 32.0, False), (10, 5, 1, 0.5, True)]
)
def test_lora_linear_matches_peft(ref, in_f, out_f, rank, alpha, bias):
    torch.manual_seed(0)
    layer = ref.lora.LoRALinear(in_f, out_f, bias=bias, lora_rank=rank, lora_alpha=alpha)
    with torch.no_grad():
        layer.lora_B.normal_()  # a non-zero update (B starts at zero)
    ref.lora.mark_only_lora_as_trainable(layer)
    model, twin = peft_twin(layer)
    assert twin.scaling["default"] == pytest.approx(alpha / rank)
    x = torch.randn(3, 7, in_f)
    g = torch.randn(3, 7, out_f)
    ours, theirs = layer(x), model(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-6 * theirs.abs().max().item())
    (ours * g).sum().backward()
    (theirs * g).sum().backward()
    # the two sum in different orders (our update goes through dW = s BA): float32 rounding
    # relative to the gradient's scale (~2e-7 measured), never more
    for ours_g, theirs_g in (
        (layer.lora_A.grad, twin.lora_A["default"].weight.grad),
        (layer.lora_B.grad, twin.lora_B["default"].weight.grad),
    ):
        torch.testing.assert_close(ours_g, theirs_g, rtol=0, atol=2e-6 * theirs_g.abs().max().item())
    assert layer.weight.grad is None and twin.base_layer.weight.grad is None
    # merged: our eval() against peft's merge
    layer.eval()
    twin.merge()
    torch.testing.assert_close(layer.weight, twin.base_layer.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer(x), ours, rtol=1e-5, atol=1e-5)


def test_merge_unmerge_round_trip(ref):
    torch.manual_seed(1)
    layer = ref.lora.LoRALinear(24, 20, lora_rank=4, lora_alpha=16.0, lora_dropout=0.3)
    with torch.no_grad():
        layer.lora_B.normal_()
    w0 = layer.weight.detach().clone()
    x = torch.randn(5, 24)
    layer.eval()
    merged = layer(x)
    layer.eval()  # idempotent
    torch.testing.assert_close(layer(x), merged, rtol=0, atol=0)
    layer.train()
    layer.train()
    torch.testing.assert_close(layer.weight.detach(), w0, rtol=0, atol=1e-6)
    layer.lora_dropout.eval()  # compare without dropout noise
    torch.testing.assert_close(layer(x), merged, rtol=1e-5, atol=1e-5)


def tiny_gpt(ref, vocab_size, **kw):
    args = {
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "block_size": 128,
        "vocab_size": vocab_size,
        "dropout": 0.0,
        "lora_rank": 4,
        "lora_alpha": 16.0,
        "lora_dropout": 0.0,
    }
    args.update(kw)
    return ref.model.GPT(ref.model.GPTConfig(**args))


def test_lora_finetuning_lowers_loss(ref):
    tok = ref.dataloader.load_tokenizer(str(FIXTURES / "tokenizer.json"))
    records = ref.dataloader.load_split(str(FIXTURES / "rotten_tomatoes"), "train")
    batches = list(ref.dataloader.CustomDataLoader(records, tok, batch_size=16).get_loader(shuffle=False))[:6]
    torch.manual_seed(0)
    model = tiny_gpt(ref, len(tok))
    # "pre-train" every weight on the bare reviews first: LoRA adapts a model that knows the
    # language, as GPT-2 does in the handout (on a random model a rank-4 update moves little)
    enc = tok([r["text"] for r in records], padding=True, return_tensors="pt")
    ids, keep = enc["input_ids"], enc["attention_mask"].bool()
    targets = torch.full_like(ids, -1)
    targets[:, :-1] = ids[:, 1:].masked_fill(~keep[:, 1:], -1)
    pre_opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(20):
        rows = slice(16 * (step % 12), 16 * (step % 12) + 16)
        loss = model(ids[rows], targets[rows])[1]
        pre_opt.zero_grad()
        loss.backward()
        pre_opt.step()
    ref.lora.mark_only_lora_as_trainable(model)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def mean_loss():
        model.eval()
        with torch.no_grad():
            out = sum(model(x, y)[1].item() for x, y in batches) / len(batches)
        model.train()
        return out

    before = mean_loss()
    for step in range(16):
        x, y = batches[step % len(batches)]
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mean_loss()
    assert after < before - 0.3, (before, after)
    for n, p in model.named_parameters():
        if n in frozen:  # un-merged again after eval(): W0 is back up to rounding
            torch.testing.assert_close(p.detach(), frozen[n], rtol=0, atol=1e-5)


def test_trainable_fraction_gpt2_medium(ref):
    # Q2.3 by arithmetic: per layer r(d + 3d) for c_attn plus r(d + d) for c_proj
    d, n_layer, r = 1024, 24, 128
    expected = n_layer * r * (4 * d + 2 * d)
    with torch.device("meta"):
        model = ref.model.GPT(
            ref.model.GPTConfig(n_layer=24, n_head=16, n_embd=1024, vocab_size=50257, lora_rank=r, lora_alpha=512.0)
        )
    ref.lora.mark_only_lora_as_trainable(model)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_trainable == expected == 18_874_368


def test_train_and_generate_end_to_end(ref, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    vocab = len(ref.dataloader.load_tokenizer(str(FIXTURES / "tokenizer.json")))
    ckpt = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=128, n_embd=32, n_layer=2, n_head=2)).save_pretrained(ckpt)
    out_dir = tmp_path / "out"
    common = [
        f"--out_dir={out_dir}",
        f"--dataset={FIXTURES / 'rotten_tomatoes'}",
        f"--tokenizer={FIXTURES / 'tokenizer.json'}",
        "--device=cpu",
    ]
    history = ref.train.main(
        [
            f"--init_from={ckpt}",
            "--rank=4",
            "--alpha=16",
            "--lr=1e-2",
            "--max_iters=4",
            "--eval_interval=2",
            "--eval_iters=2",
            "--batch_size=8",
            "--gradient_accumulation_steps=1",
            "--block_size=128",
            "--dtype=float32",
        ]
        + common
    )
    assert history[-1]["train"] < history[0]["train"]
    assert (out_dir / "ckpt.pt").is_file() and (out_dir / "ckpt_last.pt").is_file()
    results = ref.generate.main(["--init_from=resume", "--max_new_tokens=3"] + common)
    assert set(results) == {"best", "last"}
    for r in results.values():
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["positive_predictions"] + r["negative_predictions"] <= 32
    assert json.loads((out_dir / "results.json").read_text()) == results


def test_predict_label(ref):
    predict = ref.generate.predict_label
    assert predict(" positive") == 1 and predict("negative.") == 0 and predict("\n positive!") == 1
    assert predict(" the the the") == -1 and predict("") == -1
    assert predict(" " + "x" * 30 + " positive") == -1  # too late to count
    assert predict(" negative, not positive") == 0  # the earlier label wins


def test_configurator(ref, tmp_path):
    load = ref.configurator.load_config
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text("rank = 8\nalpha = 32.0\nout_dir = 'a'\nimport os\n_private = 1\n")
    defaults = {"rank": 128, "alpha": 512.0, "out_dir": "x", "lr": 5e-4, "decay_lr": False, "init_from": "gpt2"}
    cfg = load(
        [
            str(cfg_file),
            "--alpha=64",
            "lr=2e-4",
            "--init_from=gpt2-medium",
            "--decay_lr=True",
            '--out_dir="gpt-lora r8"',
        ],
        defaults,
    )
    assert cfg == {
        "rank": 8,
        "alpha": 64.0,
        "out_dir": "gpt-lora r8",
        "lr": 2e-4,
        "decay_lr": True,
        "init_from": "gpt2-medium",
    }
    assert isinstance(cfg["alpha"], float)
    with pytest.raises(ValueError, match="unknown setting"):
        load(["--rnak=8"], defaults)
    with pytest.raises(ValueError, match="expected a int"):
        load(["--rank=0.5"], defaults)
    train_defaults = load([ref.train.DEFAULT_CONFIG])
    assert (train_defaults["rank"], train_defaults["alpha"], train_defaults["lr"]) == (128, 512.0, 5e-4)


def test_dataloader_targets_ignore_padding(ref):
    dl = ref.dataloader
    tok = dl.load_tokenizer(str(FIXTURES / "tokenizer.json"))
    recs = [{"text": "a mess .", "label": 0}, {"text": "the film is warm and funny , a joy to watch .", "label": 1}]
    loader = dl.CustomDataLoader(recs, tok, batch_size=2)
    x, y = loader.collate_fn(loader.formatted_dataset)
    n0 = len(tok(dl.get_sentiment_prompt("a mess .") + " negative")["input_ids"])  # the shorter row
    assert (y[0, : n0 - 1] == x[0, 1:n0]).all()  # next-token targets
    assert (y[0, n0 - 1 :] == -1).all()  # nothing to predict past the end of the text
    loss = F.cross_entropy(torch.zeros(y.numel(), len(tok)), y.view(-1), ignore_index=-1)
    assert loss.isfinite()
