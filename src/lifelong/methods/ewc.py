"""Elastic weight consolidation (Kirkpatrick et al., 2017): the L2 pull weighted per parameter by the diagonal
Fisher information, accumulated over tasks (online EWC with a single anchor at the latest weights)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import distributed
from . import register
from .l2 import L2, L2Config
from .settings import NonNegative, Positive
from .training import statistic_batches


@dataclass
class EWCConfig(L2Config):
    strength: NonNegative = 1000.0
    fisher_batches: Positive = 50  # mini-batches of the task used to estimate the Fisher diagonal


@register
class EWC(L2):
    name = "ewc"
    description = "Elastic weight consolidation: Fisher-weighted pull towards earlier weights"
    Config = EWCConfig

    def fisher(self, task) -> dict[str, torch.Tensor]:
        """Mean squared gradient of the log-likelihood of the model's own labels (empirical Fisher, per batch)."""
        params = dict(self.encoder.model.named_parameters())
        out = {n: torch.zeros_like(p) for n, p in params.items()}
        c = self.config
        batches, count = statistic_batches(len(task.train), c.batch_size, c.seed + task.index, c.fisher_batches)
        with distributed.alone():  # each process its own share of the batches
            for idx in batches:
                batch = task.train.select(idx)
                self.encoder.zero_grad(set_to_none=True)
                F.cross_entropy(self.head(self.encoder(batch.inputs)), batch.labels).backward()
                for n, p in params.items():
                    if p.grad is not None:
                        out[n] += p.grad.detach() ** 2 / count
        self.encoder.zero_grad(set_to_none=True)
        return distributed.all_sum_dict(out)

    def end_task(self, task) -> None:
        f = self.fisher(task)
        self.importance = {n: self.importance.get(n, 0) + v for n, v in f.items()}
        super().end_task(task)
