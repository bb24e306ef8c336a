"""Public checks of lora.py and model.py: attributes, shapes, the trainable set and a few values.

Run them locally with `pytest` from your handout folder.
"""

import torch
from torch import nn


def test_rank_zero_is_plain_linear(sub, snapshot, draw):
    layer = sub.lora.LoRALinear(10, 5)
    assert isinstance(layer, nn.Linear), "LoRALinear must subclass nn.Linear"
    snapshot.check("layer", {"is_linear": isinstance(layer, nn.Linear), "in": layer.in_features,
                             "out": layer.out_features, "weight": list(layer.weight.shape),
                             "bias": list(layer.bias.shape), "has_weights_merged": layer.has_weights_merged,
                             "is_lora": layer.is_lora(), "has_lora_B": hasattr(layer, "lora_B")},
                   hint="with lora_rank=0 the layer is a plain nn.Linear without lora_A and lora_B")
    with torch.no_grad():
        layer.weight.copy_(draw.randn(5, 10, seed=1))
        layer.bias.copy_(draw.randn(5, seed=2))
    x = draw.randn(3, 10, seed=3)
    snapshot.check("output", layer(x).detach(), hint="with lora_rank=0 the layer computes a plain linear map")


def test_lora_attributes_and_shapes(sub, snapshot):
    layer = sub.lora.LoRALinear(10, 5, bias=True, lora_rank=3, lora_alpha=6.0, lora_dropout=0.1)
    assert layer.is_lora(), "with lora_rank > 0 the layer must define lora_A"
    snapshot.check("kinds", {"lora_A": isinstance(layer.lora_A, nn.Parameter),
                             "lora_B": isinstance(layer.lora_B, nn.Parameter),
                             "lora_dropout": isinstance(layer.lora_dropout, nn.Dropout),
                             "has_weights_merged": layer.has_weights_merged},
                   hint="lora_A and lora_B are nn.Parameters, lora_dropout an nn.Dropout; nothing merged yet")
    snapshot.check("shapes", {"lora_A": list(layer.lora_A.shape), "lora_B": list(layer.lora_B.shape),
                              "weight": list(layer.weight.shape)})
    snapshot.check("dropout_p", float(layer.lora_dropout.p))


def test_lora_without_bias(sub, snapshot, set_lora, draw):
    layer = sub.lora.LoRALinear(8, 4, bias=False, lora_rank=2, lora_alpha=2.0)
    snapshot.check("bias_is_none", layer.bias is None, hint="bias=False must give a layer without a bias")
    set_lora(layer, draw.randn(4, 8, seed=1), None, draw.randn(2, 8, seed=2), draw.randn(4, 2, seed=3))
    snapshot.check("output", layer(draw.randn(2, 8, seed=4)).detach())


def test_forward_shape_keeps_leading_dims(sub, snapshot, set_lora, draw):
    layer = sub.lora.LoRALinear(12, 7, lora_rank=4, lora_alpha=8.0)
    set_lora(layer, draw.randn(7, 12, seed=1), draw.randn(7, seed=2), draw.randn(4, 12, seed=3),
             draw.randn(7, 4, seed=4))
    out = layer(draw.randn(2, 5, 12, seed=5))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5, 7), "forward must accept (..., in_features) inputs"
    snapshot.check("output", out.detach(), hint="forward must accept (..., in_features) inputs")


def test_mark_only_lora_as_trainable(sub, snapshot):
    model = nn.Sequential(sub.lora.LoRALinear(6, 6, lora_rank=2, lora_alpha=4.0), nn.LayerNorm(6),
                          sub.lora.LoRALinear(6, 3, lora_rank=2, lora_alpha=4.0), nn.Linear(3, 2))
    sub.lora.mark_only_lora_as_trainable(model)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    snapshot.check("trainable", trainable, hint="only lora_A and lora_B may train")


def test_model_uses_lora_in_attention(sub, snapshot, tiny_config, fill_params):
    model = sub.model.GPT(tiny_config(lora_rank=2, lora_alpha=4.0))
    kinds = {f"h.{i}.attn.{name}": type(getattr(block.attn, name)).__name__ == "LoRALinear"
             and bool(getattr(block.attn, name).is_lora())
             for i, block in enumerate(model.transformer.h) for name in ("c_attn", "c_proj")}
    snapshot.check("attention_lora", kinds,
                   hint="transformer.h[i].attn.c_attn and .c_proj must be LoRALinear with the config's lora_rank")
    fill_params(model, seed=3)
    model.train()
    gen = torch.Generator().manual_seed(5)
    idx, targets = torch.randint(0, 64, (2, 8), generator=gen), torch.randint(0, 64, (2, 8), generator=gen)
    _, loss = model(idx, targets)
    snapshot.check("loss", loss.detach(), rtol=1e-4, atol=1e-4)
