"""Sequential fine-tuning of backbone and head on each new task: the lower bound every method must beat.

The head grows by the new task's classes; old rows stay but nothing protects them or the backbone, so the old
tasks are overwritten (catastrophic forgetting).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import training_pass
from . import register
from .base import Learner, saved_head
from .training import fit
from .settings import Positive, PositiveFloat


@dataclass
class FinetuneConfig:
    epochs: Positive = 2
    lr: PositiveFloat = 2e-5  # backbone
    head_lr: PositiveFloat = 1e-3
    batch_size: Positive = 32
    seed: int = 0


@register
class Finetune(Learner):
    name = "finetune"
    description = "Sequential fine-tuning of backbone + head on each task (lower bound, forgets)"
    Config = FinetuneConfig
    shares_processes = True  # fit shares the training; a statistic over batches is shared (EWC's Fisher)

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.encoder = copy.deepcopy(backbone)  # the shared frozen backbone stays untouched
        self.head: nn.Linear | None = None

    # hooks for the methods built on this loop (l2, ewc, lwf, wa, replay, joint)
    def training_examples(self, task):
        return task.train

    def start_task(self, task) -> None:
        pass

    def extra_loss(self, inputs, logits) -> torch.Tensor | float:
        return 0.0

    def end_task(self, task) -> None:
        pass

    def _learn(self, task) -> None:
        self.start_task(task)
        self.head = self.grow_head(self.head, self.encoder.dim)
        self.encoder.train()

        def loss_fn(inputs, labels):
            with training_pass(self.encoder):  # bf16 autocast only when asked for (devices.train_dtype)
                features = self.encoder(inputs).float()
            logits = self.head(features)
            return F.cross_entropy(logits, labels) + self.extra_loss(inputs, logits)

        c = self.config
        fit(
            self.training_examples(task),
            loss_fn,
            [
                {"params": self.encoder.parameters(), "lr": c.lr},
                {"params": self.head.parameters(), "lr": c.head_lr},
            ],
            c.epochs,
            c.batch_size,
            c.seed + task.index,
            desc=f"{self.name} task {task.index}",
        )
        self.encoder.eval()
        self.end_task(task)

    @torch.no_grad()
    def predict(self, inputs) -> torch.Tensor:
        return self.head(self.encoder.encode(inputs))

    def state(self):
        out = {f"backbone.{k}": v for k, v in self.encoder.model.state_dict().items()}
        out.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return out

    def load_state(self, tensors):
        self.encoder.model.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")})
        self.head = saved_head(tensors)
