"""RanPAC (McDonnell et al., NeurIPS 2023): frozen features through a fixed random projection and ReLU, then a
ridge classifier from the accumulated Gram matrix G = sum phi phi^T and C = sum phi y^T. Adding a task adds to G
and C, so the classifier after task i is exactly the joint ridge solution on tasks 0..i. The ridge strength is
chosen on held-out data of the tasks seen so far (their validation split, else a tenth of their training data).
G, C and the held-out hits are sums over examples, so several processes each take a share and add them up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import distributed
from . import register
from .base import Learner, held_out
from .ridge import RandomExpansion, one_hot, ridge_solve
from .settings import Count


@dataclass
class RanPACConfig:
    projection: Count = 2048  # random features (0: use the frozen features as they are)
    ridges: str = "1e-2,1e-1,1,10,100,1000,10000"  # candidates; the best on held-out data is used
    seed: int = 0


@register
class RanPAC(Learner):
    name = "ranpac"
    description = "RanPAC: random projection + ReLU of frozen features, ridge classifier from the Gram matrix"
    frozen_features = True
    shared_kinds = ("gram",)
    Config = RanPACConfig

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.expand = RandomExpansion(backbone.dim, self.config.projection, self.config.seed)
        m = self.expand.out_dim
        self.gram = torch.zeros(m, m, dtype=torch.float64)
        self.cross = torch.zeros(m, 0, dtype=torch.float64)
        self.weight = torch.zeros(m, 0, dtype=torch.float64)
        self.lam = None
        self.held_out: list[tuple[torch.Tensor, torch.Tensor]] = []  # features of held-out data, for lambda only

    def _learn(self, task) -> None:
        train, held = held_out(task)
        x, y = self.shard(train)
        phi = self.expand(x)
        self.gram += distributed.all_sum(phi.T @ phi)
        self.cross = F.pad(self.cross, (0, len(task.classes))) + distributed.all_sum(
            phi.T @ one_hot(y, self.num_classes))
        x, y = self.shard(held)
        self.held_out.append((self.expand(x), y))  # this process's share
        hx = torch.cat([h for h, _ in self.held_out])
        hy = torch.cat([y for _, y in self.held_out])
        lams = [float(v) for v in self.config.ridges.split(",")]
        weights = [ridge_solve(self.gram, self.cross, lam) for lam in lams]
        hits = distributed.all_sum(torch.tensor([float(((hx @ w).argmax(1) == hy).sum()) for w in weights],
                                                dtype=torch.float64))
        best = int(hits.argmax())  # the first of equals, as before
        self.lam, self.weight = lams[best], weights[best]

    def chosen(self) -> dict:
        return {"ridge": self.lam}

    def predict(self, inputs) -> torch.Tensor:
        return self.score_features(self.features(inputs))

    def score_features(self, feats) -> torch.Tensor:
        return (self.expand(feats) @ self.weight).float()

    def state(self):
        # G and C are what a later task needs; W is derived from them but kept to predict without solving.
        return {"gram.matrix": self.gram, "gram.cross": self.cross, "classifier.weight": self.weight}  # float64: exact

    def load_state(self, tensors):
        self.gram, self.cross = tensors["gram.matrix"].double(), tensors["gram.cross"].double()
        self.weight = tensors["classifier.weight"].double()
