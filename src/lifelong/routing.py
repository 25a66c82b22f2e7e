"""Choosing tasks without a task id, and mixing the chosen tasks' predictions.

A query is scored against every task by the cosine similarity of its frozen feature to that task's class
prototypes (the best class of each task). The top-k tasks run their adapters; their class probabilities are mixed
with softmax weights over the routing score, sharpened by each adapted model's own confidence (a
task-confidence mixture, as in CKAA), instead of trusting one hard pick.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def task_scores(features: torch.Tensor, prototypes: list[torch.Tensor]) -> torch.Tensor:
    """[n, T]: for each task, the highest cosine similarity between the feature and one of its prototypes."""
    f = F.normalize(features, dim=-1)
    return torch.stack([(f @ F.normalize(p, dim=-1).T).max(-1).values for p in prototypes], dim=1)


def top_tasks(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices [n, k] of the k best tasks per row, and their scores."""
    values, index = scores.topk(min(k, scores.shape[1]), dim=1)
    return index, values


def mixture_weights(route: torch.Tensor, confidence: torch.Tensor, temperature: float, power: float) -> torch.Tensor:
    """Softmax over the k chosen tasks of route / temperature + power * log(confidence)."""
    return torch.softmax(route / temperature + power * confidence.clamp(min=1e-12).log(), dim=1)
