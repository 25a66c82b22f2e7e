"""LoRA (Hu et al., 2022) on a frozen linear layer: y = W x + (alpha / r) * B A x, B starting at zero."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from .site import AdapterSite


class LoRALinear(AdapterSite):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, precision: str):
        super().__init__(base, precision)
        self.rank, self.scaling = rank, alpha / rank

    def shapes(self):
        return {"A": (self.rank, self.base.in_features), "B": (self.base.out_features, self.rank)}

    def init_latent(self):
        nn.init.kaiming_uniform_(self.latent["A"], a=math.sqrt(5))
        nn.init.zeros_(self.latent["B"])

    def forward(self, x):
        y = self.base(x)
        if self.active is None:
            return y
        w = self.weights()
        return y + self.scaling * F.linear(F.linear(x, w["A"]), w["B"])


def is_pointwise(module: nn.Module) -> bool:
    """A 1x1, stride-1, ungrouped convolution: a per-pixel linear layer over channels (EfficientNet's expand and
    project convolutions)."""
    return (isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and tuple(module.stride) == (1, 1)
            and module.groups == 1 and tuple(module.padding) == (0, 0) and tuple(module.dilation) == (1, 1))


class LoRAConv1x1(LoRALinear):
    """LoRA on a pointwise convolution: the same A and B, applied per pixel as 1x1 convolutions."""

    def shapes(self):
        return {"A": (self.rank, self.base.in_channels), "B": (self.base.out_channels, self.rank)}

    def forward(self, x):
        y = self.base(x)
        if self.active is None:
            return y
        w = self.weights()
        return y + self.scaling * F.conv2d(F.conv2d(x, w["A"][:, :, None, None]), w["B"][:, :, None, None])
