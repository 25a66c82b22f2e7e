"""Analytic class-incremental learning (ACIL, Zhuang et al., NeurIPS 2022): a recursive least-squares classifier
on frozen (optionally randomly expanded) features. It keeps R = (sum phi phi^T + gamma I)^-1 and updates it with
the Woodbury identity for each task's batch, so the weights after task i equal the joint ridge solution on tasks
0..i, with no stored examples and no matrix re-inversion of old data. The update reads the batch only through its
sums phi^T phi and phi^T Y, so several processes each take a share of the task and add them up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import distributed
from . import register
from .base import Learner
from .ridge import RandomExpansion, one_hot
from .settings import Count, PositiveFloat


@dataclass
class AnalyticConfig:
    projection: Count = 2048  # random expansion width (0: frozen features as they are)
    gamma: PositiveFloat = 10.0  # ridge strength
    seed: int = 0


@register
class Analytic(Learner):
    name = "analytic"
    description = "ACIL: recursive least squares on (expanded) frozen features; equals the joint solution"
    frozen_features = True
    shared_kinds = ("rls",)
    Config = AnalyticConfig

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.expand = RandomExpansion(backbone.dim, self.config.projection, self.config.seed)
        m = self.expand.out_dim
        self.R = torch.eye(m, dtype=torch.float64) / self.config.gamma
        self.weight = torch.zeros(m, 0, dtype=torch.float64)

    def _learn(self, task) -> None:
        x, y = self.shard(task.train)
        phi = self.expand(x)
        gram = distributed.all_sum(phi.T @ phi)  # G of the task's batch: sums over examples, so shards add up
        cross = distributed.all_sum(phi.T @ one_hot(y, self.num_classes))
        self.weight = F.pad(self.weight, (0, len(task.classes)))
        # Woodbury on the batch, written with G = phi^T phi so it needs only sums:
        # R <- (R^-1 + G)^-1 = R - R (I + G R)^-1 G R ; then W <- W + R (phi^T Y - G W)
        eye = torch.eye(len(self.R), dtype=self.R.dtype)
        self.R = self.R - self.R @ torch.linalg.solve(eye + gram @ self.R, gram @ self.R)
        self.R = (self.R + self.R.T) / 2  # symmetric, as the inverse of a symmetric matrix is
        self.weight = self.weight + self.R @ (cross - gram @ self.weight)

    def predict(self, inputs) -> torch.Tensor:
        return self.score_features(self.features(inputs))

    def score_features(self, feats) -> torch.Tensor:
        return (self.expand(feats) @ self.weight).float()

    def state(self):
        return {"rls.inverse": self.R, "classifier.weight": self.weight}  # float64: exact

    def load_state(self, tensors):
        self.R, self.weight = tensors["rls.inverse"].double(), tensors["classifier.weight"].double()
