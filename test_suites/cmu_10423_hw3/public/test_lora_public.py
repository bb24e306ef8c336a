"""Public checks of lora.py and model.py: attributes, shapes and the trainable set.

Run them locally with `pytest public --submission .` from your handout folder.
"""

import torch
import torch.nn.functional as F
from torch import nn


def test_rank_zero_is_plain_linear(sub):
    layer = sub.lora.LoRALinear(10, 5)
    assert isinstance(layer, nn.Linear), "LoRALinear must subclass nn.Linear"
    assert (layer.in_features, layer.out_features) == (10, 5)
    assert tuple(layer.weight.shape) == (5, 10) and tuple(layer.bias.shape) == (5,)
    assert layer.has_weights_merged is False
    assert not layer.is_lora(), "with lora_rank=0 the layer must not define lora_A"
    assert not hasattr(layer, "lora_B"), "with lora_rank=0 the layer must not define lora_B"
    x = torch.randn(3, 10)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias),
                               msg="with lora_rank=0 the layer must compute a plain linear map")


def test_lora_attributes_and_shapes(sub, snapshot):
    layer = sub.lora.LoRALinear(10, 5, bias=True, lora_rank=3, lora_alpha=6.0, lora_dropout=0.1)
    assert layer.is_lora(), "with lora_rank > 0 the layer must define lora_A"
    for name in ("lora_A", "lora_B"):
        assert isinstance(getattr(layer, name), nn.Parameter), f"{name} must be an nn.Parameter"
    assert isinstance(layer.lora_dropout, nn.Dropout), "lora_dropout must be an nn.Dropout"
    assert layer.has_weights_merged is False
    snapshot.check("shapes", {"lora_A": list(layer.lora_A.shape), "lora_B": list(layer.lora_B.shape),
                              "weight": list(layer.weight.shape)})
    snapshot.check("dropout_p", layer.lora_dropout.p)


def test_lora_without_bias(sub):
    layer = sub.lora.LoRALinear(8, 4, bias=False, lora_rank=2, lora_alpha=2.0)
    assert layer.bias is None, "bias=False must give a layer without a bias"
    assert layer(torch.randn(2, 8)).shape == (2, 4)


def test_forward_shape_keeps_leading_dims(sub):
    layer = sub.lora.LoRALinear(12, 7, lora_rank=4, lora_alpha=8.0)
    assert layer(torch.randn(2, 5, 12)).shape == (2, 5, 7), "forward must accept (..., in_features) inputs"


def test_mark_only_lora_as_trainable(sub):
    model = nn.Sequential(sub.lora.LoRALinear(6, 6, lora_rank=2, lora_alpha=4.0), nn.LayerNorm(6),
                          sub.lora.LoRALinear(6, 3, lora_rank=2, lora_alpha=4.0), nn.Linear(3, 2))
    sub.lora.mark_only_lora_as_trainable(model)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["0.lora_A", "0.lora_B", "2.lora_A", "2.lora_B"], (
        f"only lora_A and lora_B may train; trainable now: {trainable}")


def test_model_uses_lora_in_attention(sub, tiny_config):
    model = sub.model.GPT(tiny_config(lora_rank=2, lora_alpha=4.0))
    for i, block in enumerate(model.transformer.h):
        for name in ("c_attn", "c_proj"):
            layer = getattr(block.attn, name)
            assert type(layer).__name__ == "LoRALinear" and layer.is_lora(), (
                f"transformer.h[{i}].attn.{name} must be a LoRALinear with the config's lora_rank")
    logits, loss = model(torch.randint(0, 64, (2, 8)), torch.randint(0, 64, (2, 8)))
    assert logits.shape == (2, 8, 64) and loss.dim() == 0
