"""Test-time normalisation (Schneider et al., 2020; Nado et al., 2020): normalise each test batch with its own
statistics instead of the source's. No gradients; the whole gain comes from re-centering shifted activations."""

from __future__ import annotations

import torch

from . import register
from .base import TestTimeMethod, use_batch_statistics


@register
class BatchNorm(TestTimeMethod):
    name = "bn"
    description = "Test-time normalisation: each batch normalised with its own statistics (no training)"
    adapts = "normalisation statistics"

    def setup(self):
        use_batch_statistics(self.net)

    @torch.no_grad()
    def adapt(self, pixels):
        return self.source.logits(self.net, pixels)
