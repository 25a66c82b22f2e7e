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
