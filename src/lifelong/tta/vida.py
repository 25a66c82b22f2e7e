"""Domain adapters for continual test-time adaptation, in the spirit of ViDA (Liu et al., ICLR 2024), built from
this project's own adapters and their precisions (1-bit by default).

Beside every pointwise convolution the adapter placement names (EfficientNet: expand and project, in every block)
sit a low-rank and a high-rank LoRA adapter; only they train, the backbone stays frozen. ViDA's observation: a
low-rank adapter keeps what holds across domains, a high-rank one fits the current domain. Its homeostatic
allotment is kept: per batch, the teacher's uncertainty u over augmented views (1 - its averaged top
probability) scales the high-rank adapter by 1 + u and the low-rank one by 1 - u, so an unfamiliar batch leans on
the domain-specific adapter. The student learns the teacher's augmentation-averaged predictions; the teacher is its
moving average and predicts.

`state()` merges each adapter pair into its convolution at the last batch's scales: the adapted network then has
the source network's tensors and names, and loads wherever the source does."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..adapters.families import family
from ..adapters.lora import LoRAConv1x1, is_pointwise
from ..errors import LifelongError
from ..methods.settings import Count, Fraction, Positive, PositiveFloat, Precision
from . import register
from .augment import augment
from .base import TestTimeMethod, cross_entropy_soft, ema_update, use_batch_statistics


@dataclass
class ViDAConfig:
    lr: PositiveFloat = 1e-3
    momentum: Fraction = 0.999       # teacher's exponential moving average
    low_rank: Positive = 1
    high_rank: Positive = 16
    precision: Precision = "1bit"    # the adapters' weights, as `adapters` stores them
    augmentations: Count = 4         # augmented teacher passes: the pseudo-label and the uncertainty


class DomainAdapted(nn.Module):
    """A frozen pointwise convolution plus a low-rank and a high-rank adapter, each scaled per batch."""

    def __init__(self, base: nn.Conv2d, low: int, high: int, precision: str):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.sites = nn.ModuleList([LoRAConv1x1(base, r, r, precision) for r in (low, high)])
        for site in self.sites:
            site.new_task()
            site.active = "train"
        self.scales = (1.0, 1.0)

    def delta(self) -> torch.Tensor:
        """The adapters' weight change [out, in] at the current scales."""
        out = 0
        for scale, site in zip(self.scales, self.sites):
            w = site.weights()
            out = out + scale * site.scaling * (w["B"] @ w["A"])
        return out

    def forward(self, x):
        return self.base(x) + F.conv2d(x, self.delta()[:, :, None, None])


def _targets(net: nn.Module) -> list[str]:
    config = getattr(net, "config", None)
    names = family(config).targets if config is not None else ()
    return [n for n, m in net.named_modules() if n.rsplit(".", 1)[-1] in names and is_pointwise(m)]


@register
class ViDA(TestTimeMethod):
    name = "vida"
    description = "Low- and high-rank 1-bit adapters on a frozen backbone, scaled by the teacher's uncertainty"
    adapts = "adapters"
    Config = ViDAConfig

    def setup(self):
        use_batch_statistics(self.net).requires_grad_(False)
        self.targets = _targets(self.net)
        if not self.targets:
            raise LifelongError("vida: the backbone has no pointwise convolutions where the adapter placement puts "
                                "adapters (lifelong/adapters/families.py)")
        torch.manual_seed(0)
        for name in self.targets:
            parent, _, child = name.rpartition(".")
            holder = self.net.get_submodule(parent) if parent else self.net
            setattr(holder, child, DomainAdapted(getattr(holder, child), self.config.low_rank, self.config.high_rank,
                                                 self.config.precision).to(next(self.net.parameters()).device))
        self.teacher = copy.deepcopy(self.net).requires_grad_(False)
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=self.config.lr)

    def _set_scales(self, scales: tuple[float, float]) -> None:
        for net in (self.net, self.teacher):
            for m in net.modules():
                if isinstance(m, DomainAdapted):
                    m.scales = scales

    def adapt(self, pixels):
        with torch.no_grad():
            views = [augment(pixels) for _ in range(self.config.augmentations)] or [pixels]
            probs = torch.stack([self.source.logits(self.teacher, v).softmax(1) for v in views]).mean(0)
            u = float(1 - probs.max(1).values.mean())
            self._set_scales((1 - u, 1 + u))
            prediction = self.source.logits(self.teacher, pixels)
        logits = self.source.logits(self.net, pixels)
        loss = cross_entropy_soft(logits, probs.clamp_min(1e-8).log()).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        ema_update(self.teacher, self.net, self.config.momentum)
        return prediction

    @torch.no_grad()
    def state(self):
        """The teacher with its adapters merged into the convolutions: the source network's names and shapes."""
        plain = copy.deepcopy(self.source.net)
        for name in self.targets:
            adapted = self.teacher.get_submodule(name)
            plain.get_submodule(name).weight.add_(adapted.delta()[:, :, None, None].to(adapted.base.weight.dtype))
        return {k: v.detach().cpu().contiguous() for k, v in plain.state_dict().items()}
