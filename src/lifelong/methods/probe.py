"""Joint linear probe: multinomial logistic regression on the frozen features of all data seen so far.

A reference, not a continual method: it keeps every training example's frozen feature and refits from scratch
after each task, so it bounds what any classifier on the frozen features can reach (the closed-form methods and
the routers of `adapters` are such classifiers, learned without examples). Features are standardised with the
seen data's mean and spread; the L2 strength is chosen on held-out data of the tasks seen so far (their val
splits, else every tenth training example), then the probe is refitted on all seen training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import register
from .base import Learner, held_out
from .settings import Positive


@dataclass
class ProbeConfig:
    l2: str = "1e-5,1e-4,1e-3,1e-2"  # candidate strengths (times the squared weight norm); best on held-out data
    max_iter: Positive = 200  # L-BFGS iterations per fit


@register
class Probe(Learner):
    name = "probe"
    description = "Joint logistic-regression probe on frozen features of all data seen (reference; keeps features)"
    frozen_features = True
    keeps_examples = True
    Config = ProbeConfig

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.train_x, self.train_y, self.held_x, self.held_y = [], [], [], []
        self.mean = torch.zeros(backbone.dim)
        self.std = torch.ones(backbone.dim)
        self.weight = torch.zeros(0, backbone.dim)
        self.bias = torch.zeros(0)
        self.l2 = None

    def _fit(self, x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.zeros(self.num_classes, x.shape[1], requires_grad=True)
        b = torch.zeros(self.num_classes, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=self.config.max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(x @ w.T + b, y) + l2 * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return w.detach(), b.detach()

    def _learn(self, task) -> None:
        train, held = held_out(task)
        from_train = held is not task.val  # held-out carved from train goes back into the final fit
        self.train_x.append(self.features(train.inputs))
        self.train_y.append(train.labels)
        self.held_x.append(self.features(held.inputs))
        self.held_y.append(held.labels)
        x, y = torch.cat(self.train_x), torch.cat(self.train_y)
        hx, hy = torch.cat(self.held_x), torch.cat(self.held_y)
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-6)
        z, hz = (x - self.mean) / self.std, (hx - self.mean) / self.std
        best = None
        for l2 in (float(v) for v in self.config.l2.split(",")):
            w, b = self._fit(z, y, l2)
            acc = float(((hz @ w.T + b).argmax(1) == hy).float().mean())
            if best is None or acc > best[0]:
                best = (acc, l2)
        self.l2 = best[1]
        if from_train:
            z, y = torch.cat([z, hz]), torch.cat([y, hy])
        self.weight, self.bias = self._fit(z, y, self.l2)

    def chosen(self) -> dict:
        return {"l2": self.l2}

    def predict(self, inputs) -> torch.Tensor:
        return self.score_features(self.features(inputs))

    def score_features(self, feats) -> torch.Tensor:
        return ((feats - self.mean) / self.std) @ self.weight.T + self.bias

    def stored_bytes(self):
        out = super().stored_bytes()
        out["examples"] = sum(t.numel() * t.element_size() for t in self.train_x + self.held_x)
        return out

    def state(self):
        return {"probe.weight": self.weight, "probe.bias": self.bias, "standardise.mean": self.mean,
                "standardise.std": self.std}

    def load_state(self, tensors):
        self.weight, self.bias = tensors["probe.weight"], tensors["probe.bias"]
        self.mean, self.std = tensors["standardise.mean"], tensors["standardise.std"]
