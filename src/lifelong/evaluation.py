"""The one protocol loop: learn task i, evaluate on the test data of every task seen so far with one head and
no task id, fill row i of the accuracy matrix. Only this loop ever touches test data."""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable

import torch

from . import metrics
from .data.task import Examples, Stream
from .methods.base import Learner

log = logging.getLogger(__name__)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def accuracy(learner: Learner, examples: Examples, tasks: torch.Tensor, batch_size: int = 1024):
    """Per-example correctness (bool [n]) of the learner's argmax over all classes seen so far, and, for a
    learner that routes among tasks, whether its highest-weighted task is the example's task (else None)."""
    hits, routed = [], []
    for s in range(0, len(examples), batch_size):
        part = examples.select(range(s, min(s + batch_size, len(examples))))
        scores, task_weights = learner.predict_routed(part.inputs)
        hits.append(scores.argmax(-1) == part.labels)
        if task_weights is not None:
            routed.append(task_weights.argmax(-1) == tasks[s : s + len(part)])
    return torch.cat(hits), (torch.cat(routed) if routed else None)


def run(learner: Learner, stream: Stream, on_task_end: Callable[[int, dict], None] | None = None) -> dict:
    """Run the stream through the learner; returns the metrics dict that results.json is built from."""
    T = len(stream)
    R: list[list[float | None]] = [[None] * T for _ in range(T)]
    seconds, eval_seconds, stored, peaks, routing = [], [], [], [], []
    for i, task in enumerate(stream):
        log.info("task %d/%d %s: %d classes, %d train examples", i + 1, T, task.name, len(task.classes), len(task.train))
        t0 = time.perf_counter()
        learner.learn(task)
        seconds.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        seen = [t.test for t in stream.tasks[: i + 1]]
        task_of = torch.cat([torch.full((len(s),), j) for j, s in enumerate(seen)])
        hits, routed = accuracy(learner, Examples.concat(seen), task_of)
        for j, part in enumerate(torch.split(hits, [len(s) for s in seen])):
            R[i][j] = part.float().mean().item()
        routing.append(routed.float().mean().item() if routed is not None else None)
        eval_seconds.append(time.perf_counter() - t0)
        stored.append(learner.stored_bytes())
        peaks.append(peak_memory_mb())
        row = {"task": i, "accuracy": R[i][: i + 1], "seconds": seconds[-1], "stored_bytes": stored[-1]}
        if on_task_end:
            on_task_end(i, row)

    totals = [sum(s.values()) for s in stored]
    out = metrics.summary(R)
    out.update(
        task_names=[t.name for t in stream],
        bytes_per_task=[totals[0]] + [b - a for a, b in zip(totals, totals[1:])],
        stored_bytes=stored,
        seconds_per_task=seconds,
        eval_seconds_per_task=eval_seconds,
        total_seconds=sum(seconds) + sum(eval_seconds),
        peak_memory_mb=max(peaks),
        peak_memory_mb_per_task=peaks,
    )
    if routing[-1] is not None:
        out["routing_accuracy"] = routing[-1]
        out["routing_accuracy_per_task"] = routing
    return out
