"""The protocol every test-time adaptation method follows, and what they share.

A `SourceModel` is an image network (pixels -> pooled feature; its normalisation layers are what most methods
adapt) and a fixed head (pooled feature -> class scores): the frozen-feature scoring of any `lifelong` learner that
reads only frozen features, or a linear probe fitted on clean data. The head stays fixed on purpose: every method
then adapts the same thing, the backbone, whatever the source, and a store version stays one learner plus the
adapted backbone tensors.

A method sees unlabeled batches of pixels in [0, 1] one after another: `adapt(pixels)` returns the batch's class scores, predicted
while adapting (online: a batch is predicted before the next one is seen), `reset()` goes back to the source
weights, and `state()` names the adapted network's tensors, which is what a store version saves.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import ClassVar

import torch
from torch import nn

from ..methods.base import NoConfig
from ..methods.settings import config_from_dict


@dataclasses.dataclass
class SourceModel:
    net: nn.Module                                   # normalised pixels [n, 3, H, W] -> pooled features [n, dim]
    head: Callable[[torch.Tensor], torch.Tensor]     # pooled features (CPU, fp32) -> class scores; kept fixed
    classes: list[str]
    mean: torch.Tensor                               # [1, 3, 1, 1]: the network's input normalisation
    std: torch.Tensor
    prototypes: torch.Tensor | None = None           # source class means of the pooled feature, when known

    def features(self, net: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled features (CPU, fp32) of pixels in [0, 1] [n, 3, H, W] through `net` (the source's or a copy)."""
        return net((pixels - self.mean) / self.std).float().cpu()

    def logits(self, net: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(net, pixels))


def norm_layers(net: nn.Module) -> Iterator[nn.modules.batchnorm._NormBase]:
    return (m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def use_batch_statistics(net: nn.Module) -> nn.Module:
    """Normalise with each test batch's own statistics (the `bn` baseline, and the mode Tent, CoTTA and RMT adapt
    in); the running statistics are left as the source's, so `state()` keeps the source's for serving."""
    net.eval()  # dropout and the like stay off: only the normalisation layers change mode
    for m in norm_layers(net):
        m.train()
        m.track_running_stats = False
    return net


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of each row's softmax [n]."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def cross_entropy_soft(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of `logits` against the (detached-by-caller) softmax of `target_logits` [n]."""
    return -(target_logits.softmax(1) * logits.log_softmax(1)).sum(1)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """Mean teacher: teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)


class TestTimeMethod(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    adapts: ClassVar[str]  # what changes: "nothing", "normalisation statistics", "normalisation affine", "adapters",
    # "all"
    Config: ClassVar[type] = NoConfig

    def __init__(self, source: SourceModel, config=None):
        self.source = source
        self.config = config if config is not None else self.Config()
        self.reset()

    @classmethod
    def from_settings(cls, source: SourceModel, values: dict) -> TestTimeMethod:
        return cls(source, config_from_dict(cls.Config, values))

    def reset(self) -> None:
        """Back to the source weights, with fresh optimiser and teacher state."""
        self.net = copy.deepcopy(self.source.net)
        self.setup()

    def setup(self) -> None:
        """Configure `self.net` (a fresh copy of the source network) for adaptation."""
        self.net.eval()

    @abstractmethod
    def adapt(self, pixels: torch.Tensor) -> torch.Tensor:
        """Scores [n, classes] for one unlabeled batch, adapting on it."""

    def state(self) -> dict[str, torch.Tensor]:
        """The adapted network's tensors (parameters and normalisation statistics), by the source's names."""
        return {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
