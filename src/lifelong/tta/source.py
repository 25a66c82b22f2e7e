"""No adaptation: the source model as trained, the reference every method must beat."""

from __future__ import annotations

import torch

from . import register
from .base import TestTimeMethod


@register
class Source(TestTimeMethod):
    name = "source"
    description = "No adaptation: the source model in inference mode"
    adapts = "nothing"

    @torch.no_grad()
    def adapt(self, pixels):
        return self.source.logits(self.net, pixels)
