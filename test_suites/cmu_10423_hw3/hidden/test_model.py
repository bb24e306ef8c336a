"""LoRA in the GPT-2 attention layers (model.py) and the trainable fraction (Q2.3)."""

import torch


def lora_layers(model):
    return sorted(name for name, m in model.named_modules()
                  if type(m).__name__ == "LoRALinear" and m.is_lora())


def test_lora_on_attention_projections_only(sub, snapshot, tiny_config):
    model = sub.model.GPT(tiny_config())
    names = lora_layers(model)
    expected = [f"transformer.h.{i}.attn.{p}" for i in range(2) for p in ("c_attn", "c_proj")]
    assert names == expected, (
        f"LoRA must be on c_attn (query, key, value) and c_proj of every attention layer, nowhere else; "
        f"found it on {names}")
    shapes = {n: [list(m.lora_A.shape), list(m.lora_B.shape)] for n, m in model.named_modules() if n in names}
    snapshot.check("lora_shapes", shapes)
    snapshot.check("scalings", [float(m.lora_scaling) for n, m in model.named_modules() if n in names],
                   hint="pass lora_alpha and lora_rank from the config to LoRALinear")


def test_lora_dropout_from_config(sub, tiny_config):
    model = sub.model.GPT(tiny_config(lora_dropout=0.2))
    ps = {m.lora_dropout.p for m in model.modules() if type(m).__name__ == "LoRALinear" and m.is_lora()}
    assert ps == {0.2}, "pass lora_dropout from the config to every LoRALinear"


def test_trainable_parameter_count(sub, snapshot, tiny_config):
    model = sub.model.GPT(tiny_config())
    sub.lora.mark_only_lora_as_trainable(model)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    snapshot.check("n_trainable", n_trainable,
                   hint="per layer r * (n_embd + 3 n_embd) for c_attn plus r * (n_embd + n_embd) for c_proj")


def test_model_at_init_equals_base_model(sub, tiny_config, fill_params):
    base = sub.model.GPT(tiny_config(lora_rank=0))
    lora = sub.model.GPT(tiny_config())
    assert lora_layers(lora), "GPTConfig(lora_rank=4) must give a model with LoRA layers"
    fill_params(base, seed=1)
    missing, unexpected = lora.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.endswith(("lora_A", "lora_B")) for k in missing), (
        "a LoRA model must have the base model's parameters plus lora_A and lora_B")
    idx = torch.randint(0, 64, (2, 10))
    base.eval()
    lora.train()
    torch.testing.assert_close(lora(idx)[0], base(idx)[0], rtol=1e-5, atol=1e-5,
                               msg="with B = 0 a LoRA model must compute what the base model does")


def test_merged_model_equals_unmerged(sub, snapshot, tiny_config, fill_params):
    model = fill_params(sub.model.GPT(tiny_config()), seed=2)
    idx = torch.randint(0, 64, (2, 12))
    model.train()
    logits_train = model(idx)[0]
    model.eval()
    logits_eval = model(idx)[0]
    torch.testing.assert_close(logits_eval, logits_train, rtol=1e-4, atol=1e-4,
                               msg="model.eval() (merged LoRA) must give the logits of the un-merged model")
    snapshot.check("logits", logits_eval, rtol=1e-4, atol=1e-4)


def test_gpt2_medium_trainable_fraction(sub, snapshot):
    # Q2.3: gpt2-medium with r=128, alpha=512, built on the meta device (shapes only, no weights)
    config = sub.model.GPTConfig(n_layer=24, n_head=16, n_embd=1024, vocab_size=50257, block_size=1024,
                                 bias=True, dropout=0.0, lora_rank=128, lora_alpha=512.0, lora_dropout=0.05)
    with torch.device("meta"):
        model = sub.model.GPT(config)
    sub.lora.mark_only_lora_as_trainable(model)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    snapshot.check("n_trainable", n_trainable)
    snapshot.check("n_total", n_total)
    snapshot.check("percent", 100 * n_trainable / n_total, rtol=1e-6, atol=1e-6)


def test_from_pretrained_local_checkpoint(sub, hf_checkpoint):
    path, hf = hf_checkpoint
    overrides = {"dropout": 0.0, "lora_rank": 4, "lora_alpha": 8.0, "lora_dropout": 0.0}
    model = sub.model.GPT.from_pretrained(str(path), overrides)
    assert len(lora_layers(model)) == 4, "from_pretrained must build LoRA layers from lora_rank"
    idx = torch.randint(0, 64, (2, 9))
    model.train()  # B = 0: the fresh LoRA update is zero, so the logits are GPT-2's
    with torch.no_grad():
        expected = hf(idx).logits
    torch.testing.assert_close(model(idx, idx)[0], expected, rtol=1e-4, atol=1e-4,
                               msg="a LoRA model loaded from a GPT-2 checkpoint must reproduce its logits")
