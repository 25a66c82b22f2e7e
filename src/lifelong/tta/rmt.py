"""RMT, the robust mean teacher (Döbler et al., CVPR 2023). A mean teacher as in CoTTA, but the student learns
the teacher's predictions through a symmetric cross-entropy (its gradients stay bounded on the wrong, confident
pseudo-labels that make Tent collapse), on the batch and on an augmented view; a contrastive term pulls both views
towards the nearest source class prototype through a small projector, so the features stay where the fixed head
expects them. Predictions are student + teacher.

Left out: the paper's warm-up and replay on source data. A deployed model adapts where its training data is no
longer at hand; without source prototypes (a source that does not keep class means) the contrastive term is off."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..methods.settings import Fraction, NonNegative, Positive, PositiveFloat
from . import register
from .augment import augment
from .base import TestTimeMethod, cross_entropy_soft, ema_update, use_batch_statistics


@dataclass
class RMTConfig:
    lr: PositiveFloat = 1e-3       # Adam, the paper's CIFAR setting
    momentum: Fraction = 0.999     # teacher's exponential moving average
    contrast: NonNegative = 1.0    # weight of the contrastive term (0: off)
    temperature: PositiveFloat = 0.1
    projection: Positive = 128     # projector output width


def symmetric_cross_entropy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return 0.5 * cross_entropy_soft(student, teacher) + 0.5 * cross_entropy_soft(teacher, student)


def contrastive(views: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR-style loss over [n, v, d] normalised views: the other views of the same row are the positives."""
    n, v, _ = views.shape
    z = views.transpose(0, 1).reshape(n * v, -1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(n * v, dtype=torch.bool)
    sim = sim.masked_fill(self_mask, float("-inf"))
    rows = torch.arange(n).repeat(v)
    positive = (rows[:, None] == rows[None, :]) & ~self_mask
    log_prob = sim.log_softmax(1)
    return -(log_prob.masked_fill(~positive, 0).sum(1) / positive.sum(1)).mean()


@register
class RMT(TestTimeMethod):
    name = "rmt"
    description = "RMT: robust mean teacher (symmetric cross-entropy, contrast to source prototypes)"
    adapts = "all"
    Config = RMTConfig

    def setup(self):
        use_batch_statistics(self.net).requires_grad_(True)
        self.teacher = copy.deepcopy(self.net).requires_grad_(False)
        params = list(self.net.parameters())
        self.projector = None
        protos = self.source.prototypes
        if protos is not None and self.config.contrast > 0:
            d = protos.shape[1]
            torch.manual_seed(0)
            self.projector = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, self.config.projection))
            params += list(self.projector.parameters())
            self.prototypes = F.normalize(protos.float(), dim=1)
        self.optimizer = torch.optim.Adam(params, lr=self.config.lr, betas=(0.9, 0.999))

    def adapt(self, pixels):
        feats = self.source.features(self.net, pixels)
        feats_aug = self.source.features(self.net, augment(pixels))
        logits, logits_aug = self.source.head(feats), self.source.head(feats_aug)
        with torch.no_grad():
            teacher_feats = self.source.features(self.teacher, pixels)
            target = self.source.head(teacher_feats)
        loss = (0.5 * symmetric_cross_entropy(logits, target) + 0.5 * symmetric_cross_entropy(logits_aug, target)).mean()
        if self.projector is not None:
            nearest = (F.normalize(teacher_feats, dim=1) @ self.prototypes.T).argmax(1)
            views = torch.stack([self.prototypes[nearest] * feats.norm(dim=1, keepdim=True).detach(), feats, feats_aug], 1)
            views = F.normalize(self.projector(views), dim=-1)
            loss = loss + self.config.contrast * contrastive(views, self.config.temperature)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        ema_update(self.teacher, self.net, self.config.momentum)
        return (logits + target).detach()
