"""APER (Zhou et al., IJCV 2024, "adapt and merge"): adapt the backbone with an adapter on the first task only,
then classify every task by cosine to class means of [frozen feature, adapted feature]. The first task's data
makes the features fit the domain; the frozen half keeps them general. Later tasks only add class means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..adapters import AdaptedTop
from . import register
from .topblock import AdapterTrainConfig, SplitCache, adapted, train_adapter
from .base import Learner
from .sums import class_means


@register
class APER(Learner):
    name = "aper"
    shares_processes = True  # SplitCache shares the frozen pass; fit shares the training
    description = "APER: adapter trained on the first task only, class means of frozen + adapted features"
    Config = AdapterTrainConfig

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.top = AdaptedTop(backbone.model, self.config.adapter_config())
        self.cache = SplitCache(backbone, self.top.split)
        self.packed: dict[str, torch.Tensor] = {}
        self.means = torch.empty(0, 2 * backbone.dim)

    @torch.no_grad()
    def merged(self, texts) -> torch.Tensor:
        hidden, pooled = self.cache(list(texts))
        out = []
        for s in range(0, len(hidden), 256):
            out.append(adapted(self.top, hidden[s : s + 256], 0))
        return torch.cat([F.normalize(pooled, dim=-1), F.normalize(torch.cat(out), dim=-1)], dim=-1)

    def _learn(self, task) -> None:
        if not self.packed:
            self.packed, _, _ = train_adapter(self.top, self.cache, task, self.config, f"aper adapt task {task.index}")
        feats = self.merged(task.train.inputs)
        self.means = torch.cat([self.means, class_means(feats, task.train.labels, task.classes)])

    def predict(self, inputs) -> torch.Tensor:
        return F.normalize(self.merged(inputs), dim=-1) @ F.normalize(self.means, dim=-1).T

    def state(self):
        out = {f"adapter.{k}": v for k, v in self.packed.items()}
        out["class_means.weight"] = self.means
        return out

    def load_state(self, tensors):
        self.packed = {k[len("adapter."):]: v for k, v in tensors.items() if k.startswith("adapter.")}
        self.top.add_packed(self.packed)
        self.means = tensors["class_means.weight"]
