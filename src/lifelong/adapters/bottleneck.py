"""A bottleneck adapter parallel to a transformer block's MLP (He et al., 2022): down to width d, ReLU, up, times
a learned scale, added to the MLP's output before the block's residual LayerNorm.

It wraps the block's MLP output module, whose forward is `(hidden_states, input_tensor)` in BERT-family models
(`input_tensor` is the attention output, the MLP's input), so the model's own code stays unmodified.
"""

from __future__ import annotations

import math
import re

import torch.nn.functional as F
from torch import nn

from .families import family
from .site import AdapterSite, Param, register_kind


class ParallelBottleneck(AdapterSite):
    def __init__(self, base: nn.Module, dim: int, width: int, precision: str):
        super().__init__(base, precision)
        self.dim, self.width = dim, width

    def params(self):
        return {"down": Param((self.width, self.dim), init=lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5))),
                "up": Param((self.dim, self.width), init=lambda t: nn.init.normal_(t, std=1e-4)),  # the identity, nearly
                "scale": Param((1,), quantised=False, init=1.0)}

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


@register_kind("bottleneck")
def wrap(name: str, module: nn.Module, top) -> AdapterSite | None:
    """Where a bottleneck goes depends on the model: parallel to a BERT-family block's MLP output module, parallel
    to a ViT block's `mlp` (families.py names it per model family), or after each convolutional block."""
    c = top.config
    if top.image:
        where = family(top.model_config).bottleneck
        if where == "block" and re.fullmatch(r"\d+", name):
            dim = top.model_config.block_dims[top.split + int(name)]
            return ConvBlockBottleneck(module, dim, c.rank, c.precision)
        if where != "block" and re.fullmatch(rf"\d+\.{where}", name):
            return ParallelMLPBottleneck(module, top.dim, c.rank, c.precision)
        return None
    if re.fullmatch(r"\d+\.output", name) and hasattr(module, "dense"):
        return ParallelBottleneck(module, top.model_config.hidden_size, c.rank, c.precision)
    return None
