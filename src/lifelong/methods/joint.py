"""Joint training on all data seen so far: the upper bound (it keeps every example, which the others may not).

After task i it trains backbone and head on the union of tasks 0..i, continuing from its previous weights.
"""

from __future__ import annotations

from ..data.task import Examples
from . import register
from .finetune import Finetune


@register
class Joint(Finetune):
    name = "joint"
    description = "Joint training on all data seen so far (upper bound; keeps every example)"
    keeps_examples = True

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.seen: list[Examples] = []

    def training_examples(self, task):
        self.seen.append(task.train)
        return Examples.concat(self.seen)

    def stored_bytes(self):
        out = super().stored_bytes()
        out["examples"] = sum(e.nbytes() for e in self.seen)
        return out
