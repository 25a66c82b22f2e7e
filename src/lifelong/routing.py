"""Choosing tasks without a task id, and mixing the chosen tasks' predictions.

A global class model over every seen class (methods/gaussian.py) gives log-posteriors log g(c|x) at a temperature;
a task's posterior G(t|x) is the sum over its classes, and the top-k tasks run their adapters. A routed class c of
task t then scores

    (1 - beta) * log g(c|x) + beta * (log G(t|x) + log a_t(c|x))

where a_t is the adapted head's softmax over its own classes: beta = 0 is the global model alone, beta = 1 the chain
rule p(t|x) p(c|x, t) with the adapter deciding within the task. Which task wins is the class model's call: the
learner chooses temperature and beta (and the covariance shrinkage) on held-out data of each task as it learns it,
and that data only ever belongs to the newest task, so a term that lets a task's own head vote for its task (its
highest logit, as an earlier version did) was rewarded there for favouring the newest task and cost old tasks at
test time (most on images; BENCHMARKS.md, issue 11).

Not every routed task needs its adapter run (`needed`): a task's classes together hold at most G(t|x) of the
unnormalised mass (Hoelder's inequality, for any beta in [0, 1]), so once the top task's head has run, a runner-up
whose G(t|x) is below the top task's best score cannot change the argmax, and one whose G(t|x) is also below `MASS`
times the top task's mass moves no probability by more than that fraction. Skipping those is exact for the
prediction and spares most queries a second adapter pass (BENCHMARKS.md, issue 12).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TEMPERATURES = tuple(2.0**e for e in range(-6, 7))
BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
MASS = 1e-3  # a skipped task may hold at most this fraction of the top task's probability mass (see `needed`)


def task_log_posterior(log_post: torch.Tensor, task_of_class: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """[n, T]: log of the summed class posteriors of each task."""
    return torch.stack([log_post[:, task_of_class == t].logsumexp(1) for t in range(num_tasks)], dim=1)


def routed_mask(task_log_post: torch.Tensor, k: int) -> torch.Tensor:
    """[n, T] bool: the k tasks of highest posterior per row."""
    index = task_log_post.topk(min(k, task_log_post.shape[1]), dim=1).indices
    return torch.zeros_like(task_log_post, dtype=torch.bool).scatter_(1, index, True)


def mix(log_post, task_log_post, head_logits, task_of_class, routed, beta: float) -> torch.Tensor:
    """[n, C] class log-scores (-inf outside the routed tasks). `head_logits` [n, C] holds each routed task's
    adapted logits in its classes' columns (anything finite elsewhere)."""
    log_a = torch.empty_like(head_logits)
    for t in range(task_log_post.shape[1]):
        cols = task_of_class == t
        log_a[:, cols] = F.log_softmax(head_logits[:, cols], dim=1)
    scores = (1 - beta) * log_post + beta * (task_log_post[:, task_of_class] + log_a)
    return scores.masked_fill(~routed[:, task_of_class], float("-inf"))


def needed(first_scores: torch.Tensor, task_log_post: torch.Tensor, routed: torch.Tensor,
           first: torch.Tensor) -> torch.Tensor:
    """[n, T] bool: the routed tasks whose adapters can matter, given `first_scores` [n, C], the `mix` of the top
    task alone (`first`, one task per row). A runner-up t is dropped when log G(t|x) is below both the top task's
    best score (so the argmax cannot change: every class score of t is at most log G(t|x)) and log(MASS) plus the
    top task's log-mass (so no probability moves by more than MASS of itself)."""
    best = first_scores.max(1, keepdim=True).values
    mass = first_scores.logsumexp(1, keepdim=True)
    negligible = (task_log_post < best) & (task_log_post <= mass + math.log(MASS))
    return first | (routed & ~negligible)
