"""Per-class sums and counts of features: the additive statistics the exemplar-free methods are built from.

They add up across tasks (a class arrives once) and across shards of a task (several processes each summing its
own share, `Learner.shard` and `distributed.all_sum`), so the means after any split of the data are the means of
all of it.
"""

from __future__ import annotations

import torch


def class_sums(feats: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sums [k, dim], counts [k]) in float64 of the rows of each class in `classes` (every label must be one)."""
    row = {c: i for i, c in enumerate(classes)}
    index = torch.tensor([row[int(y)] for y in labels], dtype=torch.long)
    sums = torch.zeros(len(classes), feats.shape[1], dtype=torch.float64).index_add_(0, index, feats.double())
    return sums, torch.bincount(index, minlength=len(classes)).double()


def means_of(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    return sums / counts.clamp_min(1)[:, None]


def class_means(feats: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """[k, dim] mean feature of each class, in the features' dtype."""
    return means_of(*class_sums(feats, labels, classes)).to(feats.dtype)
