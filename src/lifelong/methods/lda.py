"""Linear discriminant analysis on frozen features, exact under class-incremental updates (see gaussian.py): the
class model `adapters` routes and scores with, offered on its own as a closed-form method.

The covariance shrinkage is chosen on held-out data without keeping it: each task's held-out examples are scored
under every candidate shrinkage when the task is learned, and the hits are added to a running count per
candidate, so the choice after task i weighs the held-out data of tasks 0..i, each scored against the classes
seen by then. Every statistic is a sum over examples, so several processes each take a share of the task and add
their sums up (`Learner.shard`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import distributed
from . import register
from .base import Learner, held_out
from .gaussian import SHRINKAGES, GaussianClassModel
from .settings import Count


@dataclass
class LDAConfig:
    max_dim: Count = 960  # wider features are randomly projected to this width first (bounds the shared covariance)
    seed: int = 0


@register
class LDA(Learner):
    name = "lda"
    description = "LDA: class means + one shared covariance of frozen features; incremental = joint, exactly"
    frozen_features = True
    Config = LDAConfig

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.model = GaussianClassModel(backbone.dim, self.config.max_dim, self.config.seed)
        self.hits = torch.zeros(len(SHRINKAGES), dtype=torch.float64)

    @property
    def shrink(self) -> float:
        return SHRINKAGES[int(self.hits.argmax())]

    def _learn(self, task) -> None:
        train, held = held_out(task)
        x, y = self.shard(train)
        self.model.add(*map(distributed.all_sum, self.model.task_statistics(x, y, task.classes)))
        x, y = self.shard(held)
        self.hits += distributed.all_sum(torch.tensor([float((self.model.logits(x, s).argmax(1) == y).sum())
                                                       for s in SHRINKAGES], dtype=torch.float64))

    def chosen(self) -> dict:
        return {"shrinkage": self.shrink}

    def predict(self, inputs) -> torch.Tensor:
        return self.score_features(self.features(inputs))

    def score_features(self, feats) -> torch.Tensor:
        return self.model.logits(feats, self.shrink).float()

    def state(self):
        return {**self.model.shared_state(), **self.model.class_state(), "shared.held_out_hits": self.hits.float()}

    def load_state(self, tensors):
        self.model.load_shared(tensors)
        self.model.load_classes(tensors)
        self.hits = tensors["shared.held_out_hits"].double()
