"""Experience replay with a class-balanced buffer: each task trains on its data plus the buffer, then the buffer
keeps an equal share of examples per class seen (chosen at random, seeded). Its examples count in bytes stored."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.task import Examples
from . import register
from .finetune import Finetune, FinetuneConfig
from .settings import Count


@dataclass
class ReplayConfig(FinetuneConfig):
    buffer: Count = 1000  # examples kept over all classes


def balanced(examples: Examples, size: int, seed: int) -> Examples:
    """At most size // (number of classes) examples of each class, picked at random."""
    classes = examples.labels.unique().tolist()
    if not classes:
        return examples
    quota = size // len(classes)
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in classes:
        idx = (examples.labels == c).nonzero().flatten()
        keep += idx[torch.randperm(len(idx), generator=gen)[:quota]].tolist()
    return examples.select(sorted(keep))


@register
class Replay(Finetune):
    name = "replay"
    description = "Experience replay from a class-balanced buffer of past examples"
    keeps_examples = True
    Config = ReplayConfig

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.buffer = Examples([], torch.empty(0, dtype=torch.long))

    def training_examples(self, task):
        return Examples.concat([task.train, self.buffer])

    def end_task(self, task) -> None:
        self.buffer = balanced(Examples.concat([self.buffer, task.train]), self.config.buffer, self.config.seed + task.index)

    def stored_bytes(self):
        out = super().stored_bytes()
        out["examples"] = self.buffer.nbytes()
        return out
