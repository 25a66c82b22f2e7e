"""Choosing tasks without a task id, and mixing the chosen tasks' predictions.

A query is scored against every task by the cosine similarity of its frozen feature to that task's class
prototypes (the best class of each task). The top-k tasks run their adapters; their class probabilities are mixed
with softmax weights over the routing score plus each adapted model's own confidence, its highest logit (a
task-confidence mixture, as in CKAA), instead of trusting one hard pick. On CLINC150's validation split the highest
logit separated right from wrong tasks better than the highest probability or the logits' log-sum-exp.

Which frozen feature routes, and whether the confidence term is used, is the learner's choice (methods/adapters.py:
on images the hidden state entering the adapted blocks routes and the confidence weight is 0 by default, chosen on
Split Fashion-MNIST's held-out training images). A task may keep several prototypes per class; its score is the best.
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


def mixture_weights(route: torch.Tensor, max_logit: torch.Tensor, temperature: float, weight: float) -> torch.Tensor:
    """Softmax over the k chosen tasks of route / temperature + weight * (the adapted head's highest logit)."""
    return torch.softmax(route / temperature + weight * max_logit, dim=1)
