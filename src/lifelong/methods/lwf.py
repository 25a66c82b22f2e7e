"""Learning without forgetting (Li & Hoiem, 2016): while learning a task, keep the old classes' logits close to
those of the model from before the task (distillation with temperature), using only the new task's inputs."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import register
from .finetune import Finetune, FinetuneConfig
from .settings import NonNegative, PositiveFloat


@dataclass
class LwFConfig(FinetuneConfig):
    alpha: NonNegative = 1.0  # weight of the distillation term
    temperature: PositiveFloat = 2.0


def distillation(old_logits: torch.Tensor, new_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(old / T) || softmax(new / T)), averaged over the batch: zero iff the logits agree."""
    t = temperature
    return F.kl_div(F.log_softmax(new_logits / t, -1), F.softmax(old_logits / t, -1), reduction="batchmean") * t * t


@register
class LwF(Finetune):
    name = "lwf"
    description = "Learning without forgetting: distil the previous model's old-class logits"
    Config = LwFConfig

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.old = None  # (encoder, head) frozen at the start of the task

    def start_task(self, task) -> None:
        self.old = None
        if self.head is not None:
            self.old = (copy.deepcopy(self.encoder).eval(), copy.deepcopy(self.head))

    def extra_loss(self, inputs, logits):
        if self.old is None:
            return 0.0
        encoder, head = self.old
        with torch.no_grad():
            old_logits = head(encoder(inputs))
        return self.config.alpha * distillation(old_logits, logits[:, : old_logits.shape[1]], self.config.temperature)

    def end_task(self, task) -> None:
        self.old = None  # rebuilt from the current weights when the next task starts; nothing extra is stored
