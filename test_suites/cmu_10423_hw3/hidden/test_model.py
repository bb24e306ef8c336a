"""LoRA in the GPT-2 attention layers (model.py) and the trainable fraction (Q2.3)."""

import torch


def lora_layers(model):
    return sorted(name for name, m in model.named_modules()
                  if type(m).__name__ == "LoRALinear" and m.is_lora())


def tokens(*shape, seed):
    return torch.randint(0, 64, shape, generator=torch.Generator().manual_seed(seed))


def test_lora_on_attention_projections_only(sub, snapshot, tiny_config):
    model = sub.model.GPT(tiny_config())
    names = lora_layers(model)
    snapshot.check("lora_layers", names,
                   hint="LoRA goes on c_attn (query, key, value) and c_proj of every attention layer, nowhere else")
    modules = dict(model.named_modules())
    snapshot.check("lora_shapes", {n: [list(modules[n].lora_A.shape), list(modules[n].lora_B.shape)] for n in names})
    snapshot.check("scalings", [float(modules[n].lora_scaling) for n in names],
                   hint="pass lora_alpha and lora_rank from the config to LoRALinear")


def test_lora_dropout_from_config(sub, snapshot, tiny_config):
    model = sub.model.GPT(tiny_config(lora_dropout=0.2))
    ps = [float(m.lora_dropout.p) for m in model.modules() if type(m).__name__ == "LoRALinear" and m.is_lora()]
    snapshot.check("dropout_p", ps, hint="pass lora_dropout from the config to every LoRALinear")


def test_trainable_parameter_count(sub, snapshot, tiny_config):
    model = sub.model.GPT(tiny_config())
    sub.lora.mark_only_lora_as_trainable(model)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    snapshot.check("n_trainable", n_trainable,
                   hint="per layer r * (n_embd + 3 n_embd) for c_attn plus r * (n_embd + n_embd) for c_proj")


def test_model_at_init_equals_base_model(sub, snapshot, tiny_config, fill_params):
    base = sub.model.GPT(tiny_config(lora_rank=0))
    lora = sub.model.GPT(tiny_config())
    fill_params(base, seed=1)
    missing, unexpected = lora.load_state_dict(base.state_dict(), strict=False)
    snapshot.check("keys", {"missing": sorted(missing), "unexpected": sorted(unexpected)},
                   hint="a LoRA model has the base model's parameters plus lora_A and lora_B of each LoRA layer")
    lora.train()
    snapshot.check("logits", lora(tokens(2, 10, seed=1))[0].detach(), rtol=1e-5, atol=1e-5,
                   hint="with B = 0 a LoRA model must compute what the base model does")


def test_merged_model_equals_unmerged(sub, snapshot, tiny_config, fill_params):
    model = fill_params(sub.model.GPT(tiny_config()), seed=2)
    idx = tokens(2, 12, seed=2)
    model.train()
    snapshot.check("logits_train", model(idx)[0].detach(), rtol=1e-4, atol=1e-4)
    model.eval()
    snapshot.check("logits_eval", model(idx)[0].detach(), rtol=1e-4, atol=1e-4,
                   hint="model.eval() (merged LoRA) must give the logits of the un-merged model")


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


def test_from_pretrained_gpt2_with_lora(sub, snapshot, offline_gpt2):
    # GPT.from_pretrained('gpt2', ...) as train.py calls it; the weights come from a tiny GPT-2
    # served offline under that name (conftest.offline_gpt2)
    overrides = {"dropout": 0.0, "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.0}
    model = sub.model.GPT.from_pretrained("gpt2", overrides)
    snapshot.check("lora_layers", lora_layers(model), hint="from_pretrained must build LoRA layers from lora_rank")
    idx = tokens(2, 9, seed=3)
    model.train()  # B = 0: the fresh LoRA update is zero, so the logits are GPT-2's
    snapshot.check("logits", model(idx, idx)[0].detach(), rtol=1e-4, atol=1e-4,
                   hint="a LoRA model loaded from a GPT-2 checkpoint must reproduce its logits")
