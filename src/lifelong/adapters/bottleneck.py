"""A bottleneck adapter parallel to a transformer block's MLP (He et al., 2022): down to width d, ReLU, up, times
a learned scale, added to the MLP's output before the block's residual LayerNorm.

It wraps the block's MLP output module, whose forward is `(hidden_states, input_tensor)` in BERT-family models
(`input_tensor` is the attention output, the MLP's input), so the model's own code stays unmodified.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from .site import AdapterSite


class ParallelBottleneck(AdapterSite):
    def __init__(self, base: nn.Module, dim: int, width: int, precision: str):
        super().__init__(base, precision)
        self.dim, self.width = dim, width

    def shapes(self):
        return {"down": (self.width, self.dim), "up": (self.dim, self.width)}

    def scalar_init(self):
        return {"scale": 1.0}

    def init_latent(self):
        nn.init.kaiming_uniform_(self.latent["down"], a=math.sqrt(5))
        nn.init.normal_(self.latent["up"], std=1e-4)  # near zero: the adapter starts as the identity

    def forward(self, hidden_states, input_tensor):
        if self.active is None:
            return self.base(hidden_states, input_tensor)
        w = self.weights()
        delta = F.linear(F.relu(F.linear(input_tensor, w["down"])), w["up"]) * w["scale"]
        return self.base(hidden_states, input_tensor + delta)


class ParallelMLPBottleneck(ParallelBottleneck):
    """AdaptFormer (Chen et al., 2022) for a block whose MLP is a one-input module (Hugging Face ViT's `mlp`): the
    adapter reads the MLP's input and its output is added to the MLP's."""

    def forward(self, x):
        y = self.base(x)
        if self.active is None:
            return y
        w = self.weights()
        return y + F.linear(F.relu(F.linear(x, w["down"])), w["up"]) * w["scale"]


class ConvBlockBottleneck(ParallelBottleneck):
    """A residual adapter after a convolutional block (Rebuffi et al., 2017, in series): y = block(x), then
    y + scale * up(relu(down(y))) with 1x1 convolutions over y's channels. Works whatever the block's stride or
    width change, since it only sees the block's output."""

    def forward(self, x, *args, **kwargs):
        y = self.base(x, *args, **kwargs)
        if self.active is None:
            return y
        w = self.weights()
        delta = F.conv2d(F.relu(F.conv2d(y, w["down"][:, :, None, None])), w["up"][:, :, None, None])
        return y + delta * w["scale"]
