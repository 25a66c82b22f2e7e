"""Tent (Wang et al., ICLR 2021): minimise the entropy of each test batch's predictions, updating only the
normalisation layers' scale and shift, with batch statistics. Cheap and effective on one shift; over a long
stream its own confident mistakes feed back and it can collapse, which is what CoTTA and RMT address."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..methods.settings import PositiveFloat, Positive
from . import register
from .base import TestTimeMethod, entropy, norm_layers, use_batch_statistics


@dataclass
class TentConfig:
    lr: PositiveFloat = 1e-3  # Adam, as the paper's CIFAR setting
    steps: Positive = 1       # updates per batch


@register
class Tent(TestTimeMethod):
    name = "tent"
    description = "Tent: entropy minimisation on normalisation scale/shift, batch statistics"
    adapts = "normalisation affine"
    Config = TentConfig

    def setup(self):
        use_batch_statistics(self.net)
        self.net.requires_grad_(False)
        params = []
        for m in norm_layers(self.net):
            for p in (m.weight, m.bias):
                if p is not None:
                    p.requires_grad_(True)
                    params.append(p)
        self.optimizer = torch.optim.Adam(params, lr=self.config.lr, betas=(0.9, 0.999))

    def adapt(self, pixels):
        for _ in range(self.config.steps):
            logits = self.source.logits(self.net, pixels)
            loss = entropy(logits).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return logits.detach()
