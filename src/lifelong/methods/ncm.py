"""SimpleCIL / nearest class mean (Zhou et al., 2023): frozen features, one mean per class, cosine scores.

No training and no forgetting by construction: a new task only appends its class means (from class sums, which
several processes add up from their shares).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import distributed
from . import register
from .base import Learner
from .sums import class_sums, means_of


@register
class NCM(Learner):
    name = "ncm"
    description = "SimpleCIL: cosine similarity to class means of frozen features (no training)"
    frozen_features = True

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.means = torch.empty(0, backbone.dim)

    def _learn(self, task) -> None:
        sums, counts = map(distributed.all_sum, class_sums(*self.shard(task.train), task.classes))
        self.means = torch.cat([self.means, means_of(sums, counts).float()])

    def predict(self, inputs) -> torch.Tensor:
        return self.score_features(self.features(inputs))

    def score_features(self, feats) -> torch.Tensor:
        return F.normalize(feats, dim=-1) @ F.normalize(self.means, dim=-1).T

    def state(self):
        return {"class_means.weight": self.means}

    def load_state(self, tensors):
        self.means = tensors["class_means.weight"]
