"""LoRA for a linear layer (HW3 section 2, "The LoRA Linear Layer").

For a frozen weight W0 (out, in), LoRA learns a low-rank update BA with B (out, r) and
A (r, in), scaled by alpha/r (Hu et al., 2021):

    h = W0 x + b + (alpha / r) * B A dropout(x)

`eval()` folds the update into the weight so inference costs one matmul; `train()` takes it
back out so A and B keep receiving gradients.
"""


import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Linear):
    """nn.Linear with an optional rank-`lora_rank` update; rank 0 is a plain nn.Linear."""

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,
                 device=None,
                 dtype=None,
                 lora_rank: int = 0,
                 lora_alpha: float = 0.0,
                 lora_dropout: float = 0.0) -> None:
        # TODO: initialise the inherited nn.Linear
        # BEGIN SOLUTION
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        # END SOLUTION
        self.has_weights_merged = False
        if lora_rank > 0:
            # TODO: define self.lora_dropout (nn.Dropout), self.lora_scaling (alpha / rank),
            # and the parameters self.lora_A of shape (rank, in_features) and
            # self.lora_B of shape (out_features, rank)
            # BEGIN SOLUTION
            self.lora_dropout = nn.Dropout(lora_dropout)
            self.lora_scaling = lora_alpha / lora_rank
            # the values are set by reset_parameters() below
            self.lora_A = nn.Parameter(torch.empty(lora_rank, in_features, device=device, dtype=dtype))
            self.lora_B = nn.Parameter(torch.empty(out_features, lora_rank, device=device, dtype=dtype))
            # END SOLUTION
            # mark_only_lora_as_trainable() decides what trains
            self.lora_A.requires_grad = False
            self.lora_B.requires_grad = False
            self.reset_parameters()

    def is_lora(self) -> bool:
        return hasattr(self, "lora_A")

    def reset_parameters(self) -> None:
        """Re-draw W0 and b as nn.Linear does, then A (kaiming uniform) and B (zeros)."""
        # TODO: reset the nn.Linear parameters, then, if this is a LoRA layer,
        # initialise A with kaiming_uniform_(a=math.sqrt(5)) and B with zeros
        # BEGIN SOLUTION
        super().reset_parameters()
        if self.is_lora():
            # B = 0 makes the update BA zero at the start: the layer begins as W0
            nn.init.normal_(self.lora_A, std=1 / self.lora_A.shape[0])  # the handout's "random Gaussian"
            nn.init.zeros_(self.lora_B)
        # END SOLUTION

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # TODO: the frozen linear layer plus, unless the update is already merged into the
        # weight, the scaled LoRA update applied to dropout(input)
        # BEGIN SOLUTION
        out = F.linear(input, self.weight, self.bias)  # (..., out)
        if self.is_lora() and not self.has_weights_merged:
            # dropout acts on the LoRA branch only; the frozen path sees the clean input.
            # Forming dW = s BA costs r * in * out per call whatever the batch; it equals
            # s * (x A^T) B^T up to float rounding
            out = out + F.linear(self.lora_dropout(input), self._delta_weight())
        return out
        # END SOLUTION

    def train(self, mode: bool = True) -> "LoRALinear":
        """Set the mode; training needs the update out of the weight, evaluation merges it."""
        # TODO: set the training mode, then un-merge the update from the weight in
        # training mode (or merge it in eval mode) unless that is already the case
        # BEGIN SOLUTION
        super().train(mode)
        if self.is_lora() and mode == self.has_weights_merged:
            with torch.no_grad():
                # merge when entering eval mode, un-merge when entering train mode
                sign = -1.0 if mode else 1.0
                self.weight.add_(sign * self._delta_weight())
            self.has_weights_merged = not mode
        return self
        # END SOLUTION

    def eval(self) -> "LoRALinear":
        """Evaluation mode with the update merged into the weight (merged at most once)."""
        # TODO: set evaluation mode and merge the update into the weight
        # BEGIN SOLUTION
        return self.train(False)
        # END SOLUTION

    def _delta_weight(self) -> torch.Tensor:
        # the scaled update (alpha / r) B A, shaped like the weight: (out, r) @ (r, in) -> (out, in).
        # A helper for forward, train and eval; optional (the tests never call it)
        # BEGIN SOLUTION
        return self.lora_scaling * (self.lora_B @ self.lora_A)
        # END SOLUTION

    def extra_repr(self) -> str:
        out = super().extra_repr()
        if self.is_lora():
            out += (f", lora_rank={self.lora_A.shape[0]}, lora_scaling={self.lora_scaling}, "
                    f"lora_dropout={self.lora_dropout.p}")
        return out


def mark_only_lora_as_trainable(model: nn.Module) -> nn.Module:
    """Freeze every parameter of `model` except the LoRA matrices A and B."""
    # TODO: set requires_grad to True for lora_A and lora_B, False for everything else
    # BEGIN SOLUTION
    for name, param in model.named_parameters():
        param.requires_grad = name.split(".")[-1] in ("lora_A", "lora_B")
    # END SOLUTION
    return model
