"""SLCA, Slow Learner with Classifier Alignment (Zhang et al., ICCV 2023).

Fine-tuning a pretrained backbone on a stream forgets mostly because its weights move too far; SLCA trains the
backbone with a learning rate 100x smaller than the head's (the slow learner), which on pretrained models keeps
most of the representation while still adapting it. The head, trained each task on that task's classes only, is
biased towards them; so after each task SLCA keeps a Gaussian per class (feature mean and covariance, computed
once when the class is learned) and retrains the whole head on pseudo-features sampled from the Gaussians of all
classes seen (classifier alignment, with logits divided by their norm and a temperature). As in the paper, old
classes' statistics are not updated when the backbone moves later; the slow learner keeps that drift small.

Here only the top `blocks` transformer blocks train, on the hidden states of the frozen lower blocks computed once
per input, which makes a 10-task CLINC150 run a CPU job; `blocks=0` trains every transformer block (the paper's
full backbone, token embeddings aside). The paper stores a full covariance per class (d^2 floats); here it is
compact: the top `cov_rank` principal directions of the class plus a diagonal for the rest (covariance = F^T F +
diag(v), which keeps each dimension's variance exact), all in fp16: (2 + cov_rank) * d * 2 bytes per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..adapters import TopBlocks
from ..data.task import Examples
from . import register
from .topblock import SplitCache, TopBlockSettings, fit_top, top_features
from .base import Learner, saved_head
from .training import fit
from .settings import Count, NonNegative, Positive, PositiveFloat


@dataclass
class SLCAConfig(TopBlockSettings):  # blocks: those trained (0: all, as in the paper)
    epochs: Positive = 3
    lr: PositiveFloat = 3e-3  # head
    slow: NonNegative = 0.01  # backbone learning rate = slow * lr
    batch_size: Positive = 32
    cov_rank: Count = 4  # principal directions kept per class (0: diagonal covariance)
    align_samples: Positive = 256  # pseudo-features per class for classifier alignment
    align_epochs: Positive = 5
    align_lr: PositiveFloat = 1e-3
    logit_norm: NonNegative = 0.1  # temperature of the normalised logits during alignment (0: plain logits)
    seed: int = 0


def gaussian_stats(feats: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean [d], top-`rank` covariance factor [rank, d] and the diagonal of the rest [d], such that
    factor^T factor + diag(rest) has the class's covariance on its diagonal and in its top directions."""
    n, d = feats.shape
    mean = feats.mean(0)
    centred = (feats - mean).double()
    var = centred.pow(2).sum(0) / max(n - 1, 1)
    factor = torch.zeros(rank, d, dtype=torch.float64)
    if rank and n > 1:
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        k = min(rank, len(s))
        factor[:k] = s[:k, None] * vh[:k] / (n - 1) ** 0.5
    rest = (var - factor.pow(2).sum(0)).clamp(min=0)
    return mean, factor.float(), rest.float()


def sample_gaussians(mean: torch.Tensor, factor: torch.Tensor, rest: torch.Tensor, n: int,
                     gen: torch.Generator) -> torch.Tensor:
    """n draws per class from N(mean_c, factor_c^T factor_c + diag(rest_c)): [C, n, d]."""
    C, r, d = factor.shape
    x = mean[:, None] + torch.randn(C, n, d, generator=gen) * rest.sqrt()[:, None]
    if r:
        x = x + torch.einsum("cnr,crd->cnd", torch.randn(C, n, r, generator=gen), factor)
    return x


@register
class SLCA(Learner):
    name = "slca"
    shares_processes = True  # SplitCache shares the frozen pass; fit shares the training
    description = "SLCA: slow-learning top blocks + per-class Gaussians that realign the head after each task"
    Config = SLCAConfig

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.top = TopBlocks(backbone.model, self.config.blocks).eval()  # eval: no dropout, deterministic
        self.cache = SplitCache(backbone, self.top.split)
        self.head = None
        d, r = backbone.dim, self.config.cov_rank
        self.mean, self.factor, self.rest = torch.empty(0, d), torch.empty(0, r, d), torch.empty(0, d)

    def embed(self, texts) -> torch.Tensor:
        hidden, _ = self.cache(list(texts))
        return top_features(self.top, hidden)

    def _learn(self, task) -> None:
        self.head = self.grow_head(self.head, self.backbone.dim)
        c = self.config
        groups = [{"params": self.top.parameters(), "lr": c.slow * c.lr}, {"params": self.head.parameters(), "lr": c.lr}]
        fit_top(self.top, self.cache, self.head, task, groups, c, f"slca task {task.index}")

        feats, labels = self.embed(task.train.inputs), task.train.labels
        stats = [gaussian_stats(feats[labels == k], c.cov_rank) for k in task.classes]
        # rounded to fp16 now, so the statistics in memory are the ones stored
        self.mean = torch.cat([self.mean, torch.stack([s[0] for s in stats]).half().float()])
        self.factor = torch.cat([self.factor, torch.stack([s[1] for s in stats]).half().float()])
        self.rest = torch.cat([self.rest, torch.stack([s[2] for s in stats]).half().float()])
        self.align(c.seed + task.index)

    def align(self, seed: int) -> list[float]:
        """Retrain the head (only the head) on pseudo-features drawn from every seen class's Gaussian."""
        c = self.config
        gen = torch.Generator().manual_seed(seed)
        x = sample_gaussians(self.mean, self.factor, self.rest, c.align_samples, gen)
        labels = torch.arange(len(x)).repeat_interleave(c.align_samples)
        pseudo = Examples(x.reshape(-1, x.shape[-1]), labels)

        def loss_fn(inputs, y):
            logits = self.head(inputs)
            if c.logit_norm > 0:
                logits = logits / (logits.norm(dim=-1, keepdim=True) + 1e-7) / c.logit_norm
            return F.cross_entropy(logits, y)

        batch = 4 * c.batch_size
        return fit(pseudo, loss_fn, [{"params": self.head.parameters(), "lr": c.align_lr}], c.align_epochs, batch,
                   seed, desc="slca align")

    @torch.no_grad()
    def predict(self, inputs) -> torch.Tensor:
        return self.head(self.embed(inputs))

    def state(self):
        out = {f"blocks.{k}": v for k, v in self.top.blocks.state_dict().items()}
        out.update({"head.weight": self.head.weight.detach(), "head.bias": self.head.bias.detach()})
        out.update({"stats.mean": self.mean.half(), "stats.factor": self.factor.half(), "stats.rest": self.rest.half()})
        return out

    def load_state(self, tensors):
        self.top.blocks.load_state_dict({k[len("blocks."):]: v for k, v in tensors.items() if k.startswith("blocks.")})
        self.head = saved_head(tensors)
        self.mean, self.factor, self.rest = (tensors[f"stats.{k}"].float() for k in ("mean", "factor", "rest"))
