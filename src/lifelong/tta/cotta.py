"""CoTTA (Wang et al., CVPR 2022): continual test-time adaptation without collapse. A weight-averaged teacher
gives the pseudo-labels (averaged over augmentations when the source model is unsure of the batch), the student
learns them with every weight trainable, and a small random share of weights goes back to the source after each
step, so knowledge of the source never drains away over a long stream. Predictions are the teacher's."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..methods.settings import Count, Fraction, PositiveFloat, Probability
from . import register
from .augment import augment
from .base import TestTimeMethod, cross_entropy_soft, ema_update, use_batch_statistics


@dataclass
class CoTTAConfig:
    lr: PositiveFloat = 1e-3         # Adam, the paper's CIFAR setting
    momentum: Fraction = 0.999       # teacher's exponential moving average
    restore: Probability = 0.01            # share of weights reset to the source after each step
    threshold: Fraction = 0.92       # source confidence below which pseudo-labels are augmentation-averaged
    augmentations: Count = 32        # augmented teacher passes averaged


@register
class CoTTA(TestTimeMethod):
    name = "cotta"
    description = "CoTTA: mean teacher with augmentation-averaged pseudo-labels, stochastic restore to the source"
    adapts = "all"
    Config = CoTTAConfig

    def setup(self):
        use_batch_statistics(self.net).requires_grad_(True)
        self.teacher = copy.deepcopy(self.net).requires_grad_(False)
        self.anchor = copy.deepcopy(self.net).requires_grad_(False)
        self.initial = {k: v.detach().clone() for k, v in self.net.named_parameters()}
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.lr, betas=(0.9, 0.999))

    def adapt(self, pixels):
        logits = self.source.logits(self.net, pixels)
        with torch.no_grad():
            sure = self.source.logits(self.anchor, pixels).softmax(1).max(1).values.mean()
            target = self.source.logits(self.teacher, pixels)
            if sure < self.config.threshold and self.config.augmentations:
                target = torch.stack([self.source.logits(self.teacher, augment(pixels))
                                      for _ in range(self.config.augmentations)]).mean(0)
        loss = cross_entropy_soft(logits, target).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        ema_update(self.teacher, self.net, self.config.momentum)
        with torch.no_grad():
            for name, p in self.net.named_parameters():
                mask = torch.rand_like(p) < self.config.restore
                p.copy_(torch.where(mask, self.initial[name], p))
        return target

    def state(self):
        """The teacher: it is what predicts."""
        return {k: v.detach().cpu().contiguous() for k, v in self.teacher.state_dict().items()}
