"""L2 regularisation towards the weights after the previous task: rehearsal-free and, on pretrained transformers,
a strong baseline (Smith et al., 2023). EWC is the same pull, weighted per parameter by its Fisher information.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..devices import module_device
from . import register
from .finetune import Finetune, FinetuneConfig
from .settings import NonNegative


@dataclass
class L2Config(FinetuneConfig):
    strength: NonNegative = 1.0  # lambda: penalty = lambda * sum_i w_i (theta_i - anchor_i)^2


@register
class L2(Finetune):
    name = "l2"
    description = "Fine-tuning with an L2 pull towards the weights after the previous task"
    Config = L2Config

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.anchor: dict[str, torch.Tensor] = {}
        self.importance: dict[str, torch.Tensor] = {}  # per-parameter weights (empty: all ones)

    def penalty(self) -> torch.Tensor:
        total = torch.zeros(())
        for name, p in self.encoder.model.named_parameters():
            if name in self.anchor:
                d = (p - self.anchor[name]) ** 2
                total = total + (d * self.importance[name]).sum() if self.importance else total + d.sum()
        return self.config.strength * total

    def extra_loss(self, inputs, logits):
        return self.penalty() if self.anchor else 0.0

    def end_task(self, task) -> None:
        self.anchor = {n: p.detach().clone() for n, p in self.encoder.model.named_parameters()}

    def state(self):
        out = super().state()
        out.update({f"anchor.{k}": v for k, v in self.anchor.items()})
        out.update({f"importance.{k}": v for k, v in self.importance.items()})
        return out

    def load_state(self, tensors):
        super().load_state(tensors)
        device = module_device(self.encoder.model)  # the penalty compares them with the encoder's parameters
        self.anchor = {k[7:]: v.to(device) for k, v in tensors.items() if k.startswith("anchor.")}
        self.importance = {k[11:]: v.to(device) for k, v in tensors.items() if k.startswith("importance.")}
