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

TEMPERATURES = tuple(2.0**e for e in range(-6, 7))
BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
MASS = 1e-3  # a skipped task may hold at most this fraction of the top task's probability mass (see `needed`)


def task_log_posterior(log_post: torch.Tensor, task_of_class: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """[..., n, T]: log of the summed class posteriors of each task."""
    return group_logsumexp(log_post, task_of_class, num_tasks)


def group_logsumexp(x: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """[..., n, G]: logsumexp of each row over the columns of each group (`group` [C] holds a column's group), in a
    few whole-matrix operations rather than one per group (tasks grow with the stream). Leading dimensions are
    batches of rows, each row as it would be alone."""
    index, shape = group.expand_as(x), (*x.shape[:-1], groups)
    top = torch.full(shape, float("-inf"), dtype=x.dtype).scatter_reduce(-1, index, x, "amax")
    top = top.masked_fill(top.isinf(), 0)  # a group of -inf scores (or none) sums to zero: log 0 = -inf
    total = torch.zeros(shape, dtype=x.dtype).scatter_add(-1, index, (x - top[..., group]).exp())
    return total.log() + top


def routed_mask(task_log_post: torch.Tensor, k: int) -> torch.Tensor:
    """[..., n, T] bool: the k tasks of highest posterior per row."""
    index = task_log_post.topk(min(k, task_log_post.shape[-1]), dim=-1).indices
    return torch.zeros_like(task_log_post, dtype=torch.bool).scatter_(-1, index, True)


def within_task(head_logits, task_of_class, num_tasks: int) -> torch.Tensor:
    """[n, C] log a_t(c|x): each task's adapted logits as a log-softmax over its own classes."""
    return head_logits - group_logsumexp(head_logits, task_of_class, num_tasks)[..., task_of_class]


def mix(log_post, task_log_post, head_logits, task_of_class, routed, beta, log_a=None) -> torch.Tensor:
    """[n, C] class log-scores (-inf outside the routed tasks). `head_logits` [n, C] holds each routed task's
    adapted logits in its classes' columns (anything finite elsewhere); `log_a`, their `within_task`, where the
    caller has it already. `beta` a float, or a tensor [B, 1, ..., 1] of several (then [B, ..., n, C], each as one
    call would give it: a learner scoring every candidate beta on the same rows). `log_post`, `task_log_post` and
    `routed` may carry leading dimensions (several temperatures' posteriors of the same rows), which the head's
    terms broadcast over."""
    if log_a is None:
        log_a = within_task(head_logits, task_of_class, task_log_post.shape[-1])
    scores = (1 - beta) * log_post + beta * (task_log_post[..., task_of_class] + log_a)
    return scores.masked_fill(~routed[..., task_of_class], float("-inf"))


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
