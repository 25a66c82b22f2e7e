"""What RanPAC and the analytic learner share: frozen features, an optional fixed random expansion with a
nonlinearity, and a ridge-regression classifier whose sufficient statistics add up across tasks, so the
incremental solution equals the joint one exactly, with no stored examples."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class RandomExpansion:
    """phi(x) = relu(x W) with W ~ N(0, 1) fixed by a seed (dim 0: identity). Only the seed need be stored."""

    def __init__(self, in_dim: int, out_dim: int, seed: int):
        self.out_dim = out_dim or in_dim
        self.weight = None
        if out_dim:
            gen = torch.Generator().manual_seed(seed)
            self.weight = torch.randn(in_dim, out_dim, generator=gen, dtype=torch.float64)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return x if self.weight is None else F.relu(x @ self.weight)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels, num_classes).double()


def ridge_solve(gram: torch.Tensor, cross: torch.Tensor, lam: float) -> torch.Tensor:
    """W = (G + lam I)^-1 C, in float64 for the exactness the incremental = joint property needs."""
    eye = torch.eye(len(gram), dtype=gram.dtype)
    return torch.linalg.solve(gram + lam * eye, cross)
