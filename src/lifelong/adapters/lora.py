"""LoRA (Hu et al., 2022) on a frozen linear layer: y = W x + (alpha / r) * B A x, B starting at zero."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from .site import AdapterSite, Param, register_kind


class LoRALinear(AdapterSite):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, precision: str):
        super().__init__(base, precision)
        self.rank, self.scaling = rank, alpha / rank

    def params(self):
        return {"A": Param((self.rank, self.base.in_features), init=_kaiming),
                "B": Param((self.base.out_features, self.rank), init=0.0)}

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

    def params(self):
        return {"A": Param((self.rank, self.base.in_channels), init=_kaiming),
                "B": Param((self.base.out_channels, self.rank), init=0.0)}

    def forward(self, x):
        y = self.base(x)
        if self.active is None:
            return y
        w = self.weights()
        return y + self.scaling * F.conv2d(F.conv2d(x, w["A"][:, :, None, None]), w["B"][:, :, None, None])


def _kaiming(t) -> None:
    nn.init.kaiming_uniform_(t, a=math.sqrt(5))


@register_kind("lora")
def wrap(name: str, module: nn.Module, top) -> AdapterSite | None:
    """LoRA on a linear layer named in the targets, or (image backbones) on a 1x1 convolution so named."""
    c = top.config
    if name.rsplit(".", 1)[-1] not in top.targets:
        return None
    if isinstance(module, nn.Linear):
        return LoRALinear(module, c.rank, c.alpha, c.precision)
    if top.image and is_pointwise(module):
        return LoRAConv1x1(module, c.rank, c.alpha, c.precision)
    return None
