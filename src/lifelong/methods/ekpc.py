"""EKPC, Elastic Knowledge Preservation and Compensation (Wang, Cheng et al., arXiv 2506.12351, 2025).

Exemplar-free, on a pretrained model with one adapter shared by all tasks (no per-task parameters). Two parts:
- Importance-aware parameter regularisation (IPR): after each task, each adapter parameter's importance to it is
  measured and accumulated over tasks; learning the next task adds strength * sum_i importance_i (theta_i -
  theta_i,prev)^2, so parameters old tasks rely on stay near their values while the rest stay free (elastic,
  unlike freezing the adapter). The paper has its own importance measure; here it is the mean absolute gradient
  of the squared norm of the output feature (label-free, as in MAS, Aljundi et al. 2018), normalised to mean 1
  per task.
- Trainable semantic drift compensation (TSDC): the adapter still moves, so old classes' prototypes (class means
  of adapted features, stored in fp16) go stale. On the current task's data, features before and after the task
  are both available; a drift map is learned from them and applied to every stored prototype. Here the map is
  affine, z -> z + [z, 1] D, fitted by least squares shrunk towards no drift (ridge, closed form).
Classification is by cosine to the compensated prototypes (the paper goes on to train a unified classifier on
them). Only the top `blocks` blocks carry the adapter, on the frozen lower blocks' cached hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..adapters import AdaptedTop
from ..devices import module_device
from . import register
from .topblock import AdapterSettings, SplitCache, fit_top, pad, top_features
from .base import Learner
from .sums import class_means
from .ridge import ridge_solve
from .settings import NonNegative, Positive, PositiveFloat
from .training import statistic_batches


@dataclass
class EKPCConfig(AdapterSettings):
    precision: ClassVar[str] = "fp32"  # fixed: the one shared adapter keeps training from task to task
    epochs: Positive = 5
    lr: PositiveFloat = 3e-3
    batch_size: Positive = 32
    strength: NonNegative = 1.0  # IPR: weight of the importance-weighted pull towards the previous adapter
    importance_batches: Positive = 50  # mini-batches of a task used to measure importance
    drift_ridge: NonNegative = 0.1  # TSDC: ridge (relative to the feature energy) shrinking the drift map towards none
    seed: int = 0


def compensate(before: torch.Tensor, after: torch.Tensor, prototypes: torch.Tensor, ridge: float) -> torch.Tensor:
    """Fit the drift after - before as an affine function of before (ridge, float64), apply it to prototypes."""
    x = F.pad(before.double(), (0, 1), value=1.0)
    gram = x.T @ x
    drift = ridge_solve(gram, x.T @ (after - before).double(), ridge * torch.trace(gram).item() / len(gram))
    return (prototypes.double() + F.pad(prototypes.double(), (0, 1), value=1.0) @ drift).float()


@register
class EKPC(Learner):
    name = "ekpc"
    shares_processes = True  # SplitCache shares the frozen pass; fit shares the training
    description = "EKPC: one shared adapter, importance-weighted pull to its old values, drift-compensated prototypes"
    Config = EKPCConfig

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.top = AdaptedTop(backbone.model, self.config.adapter_config())
        self.cache = SplitCache(backbone, self.top.split)
        self.top.new_task()  # the one shared adapter
        self.top.set_active("train")
        self.anchor: dict[str, torch.Tensor] = {}  # adapter after the previous task (equal to it between tasks)
        self.importance: dict[str, torch.Tensor] = {}
        self.prototypes = torch.empty(0, backbone.dim)

    def params(self) -> dict[str, nn.Parameter]:
        return {f"{n}.{k}": p for n, s in self.top.sites.items() for k, p in s.trainable().items()}

    def embed(self, texts) -> torch.Tensor:
        hidden, _ = self.cache(list(texts))
        return top_features(self.top, hidden)

    def penalty(self) -> torch.Tensor:
        total = torch.zeros(())
        for n, p in self.params().items():
            total = total + (self.importance[n] * (p - self.anchor[n]) ** 2).sum()
        return self.config.strength * total

    def sensitivity(self, task) -> dict[str, torch.Tensor]:
        """Mean |d ||f(x)||^2 / d theta| over mini-batches of the task, normalised to mean 1."""
        params, c = self.params(), self.config
        out = {n: torch.zeros_like(p) for n, p in params.items()}
        batches, count = statistic_batches(len(task.train), c.batch_size, c.seed + task.index, c.importance_batches)
        with distributed.alone():  # each process its own share of the batches
            for idx in batches:
                hidden, _ = self.cache([task.train.inputs[i] for i in idx])
                energy = self.top(*pad(hidden)).pow(2).sum(-1).mean()
                for n, g in zip(params, torch.autograd.grad(energy, list(params.values()))):
                    out[n] += g.abs() / count
        out = distributed.all_sum_dict(out)
        mean = torch.cat([v.flatten() for v in out.values()]).mean().clamp(min=1e-12)
        return {n: v / mean for n, v in out.items()}

    def _learn(self, task) -> None:
        c = self.config
        texts, labels = task.train.inputs, task.train.labels
        before = self.embed(texts) if len(self.prototypes) else None
        head = nn.Linear(self.backbone.dim, len(task.classes))  # trains the adapter; prototypes classify
        groups = [{"params": list(self.params().values()), "lr": c.lr}, {"params": head.parameters(), "lr": c.lr}]
        extra = self.penalty if self.importance else None
        fit_top(self.top, self.cache, head, task, groups, c, f"ekpc task {task.index}", extra)
        after = self.embed(texts)
        if before is not None:
            self.prototypes = compensate(before, after, self.prototypes, c.drift_ridge).half().float()
        self.prototypes = torch.cat([self.prototypes, class_means(after, labels, task.classes).half().float()])
        importance = self.sensitivity(task)
        self.importance = {n: self.importance.get(n, 0) + v for n, v in importance.items()}
        self.anchor = {n: p.detach().clone() for n, p in self.params().items()}

    @torch.no_grad()
    def predict(self, inputs) -> torch.Tensor:
        return F.normalize(self.embed(inputs), dim=-1) @ F.normalize(self.prototypes, dim=-1).T

    def state(self):
        out = {f"adapter.{n}": p.detach() for n, p in self.params().items()}
        out.update({f"importance.{n}": v for n, v in self.importance.items()})
        out["prototypes.weight"] = self.prototypes.half()
        return out

    def load_state(self, tensors):
        with torch.no_grad():
            for n, p in self.params().items():
                p.copy_(tensors[f"adapter.{n}"])
        device = module_device(self.top)  # the penalty combines importance with the adapter there
        self.importance = {n[len("importance."):]: v.to(device) for n, v in tensors.items()
                           if n.startswith("importance.")}
        self.prototypes = tensors["prototypes.weight"].float()
        self.anchor = {n: p.detach().clone() for n, p in self.params().items()}
