"""The one protocol loop: learn task i, evaluate on the test data of every task seen so far with one head and
no task id, fill row i of the accuracy matrix. Only this loop ever touches test data.

With several processes, learning is shared inside the learner (its caches and `fit`); scoring is shared here: each
rank scores its share of the inputs `alone` (its caches embed only what it scores) and the per-example results are
gathered in order, so every rank holds what one process would have computed (up to the rounding of different batch
shapes) and fills the same accuracy matrix, routing accuracy and out-of-scope rejection."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import resource
import time
from collections.abc import Callable

import torch

from . import distributed, metrics, oos
from .data.task import Examples, Stream
from .errors import LifelongError
from .methods.base import Learner

log = logging.getLogger(__name__)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def accuracy(learner: Learner, examples: Examples, task_classes: list[list[int]] | None = None,
             batch_size: int = 1024):
    """Per-example correctness (bool [n]) of the learner's argmax over all classes seen so far, its confidence
    (for out-of-scope rejection), and each task's weight per example [n, T] (else None without `task_classes`):
    the learner's own routing weights where it routes among tasks, else its best class score within each task."""
    if distributed.world() > 1:  # rows in a stride: the seen test data grows by appending (distributed.strided)
        n = len(examples)
        mine = examples.select(distributed.strided(n))  # before `alone`, where every rank is rank 0 of 1
        with distributed.alone():
            hits, best, weights = accuracy(learner, mine, task_classes, batch_size)
        if task_classes is not None and weights is None:  # this rank's share is empty
            weights = torch.zeros(0, len(task_classes))
        gather = distributed.gather_strided
        return (gather(hits.to(torch.uint8), n).bool(), gather(best.float(), n),
                gather(weights.float(), n) if task_classes is not None else None)
    hits, best, weights = [], [], []
    for s in range(0, len(examples), batch_size):
        part = examples.select(range(s, min(s + batch_size, len(examples))))
        scores, task_weights = learner.predict_routed(part.inputs)
        hits.append(scores.argmax(-1) == part.labels)
        best.append(learner.confidence(part.inputs, scores))
        if task_classes is not None:
            if task_weights is None:
                task_weights = torch.stack([scores[:, c].max(-1).values for c in task_classes], 1)
            weights.append(task_weights)
    if not hits:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0), None
    return torch.cat(hits), torch.cat(best), (torch.cat(weights) if weights else None)


def routed(weights: torch.Tensor, task_of: torch.Tensor, k: int) -> float:
    """Share of examples whose own task is among the k highest-weighted tasks."""
    top = weights.topk(min(k, weights.shape[1]), dim=1).indices
    return (top == task_of[:, None]).any(1).float().mean().item()


def accuracy_given_task(learner: Learner, stream: Stream, seen: int, batch_size: int = 1024) -> float:
    """Accuracy when each test example's task is given: the argmax over that task's classes only (with several
    processes each rank scores the rows `accuracy` gave it, a stride over the seen tasks' test data, whose inputs
    its caches already hold, and the hits are summed)."""
    hits = []
    rows, offset = [], 0  # this rank's rows of each task's test data (all of them with one process)
    for task in stream.tasks[:seen]:
        rows.append(list(distributed.strided(len(task.test), offset)))
        offset += len(task.test)
    with distributed.alone() if distributed.world() > 1 else contextlib.nullcontext():
        for task, mine in zip(stream.tasks[:seen], rows):
            for s in range(0, len(mine), batch_size):
                part = task.test.select(mine[s : s + batch_size])
                pred = torch.tensor(task.classes)[
                    learner.predict_in_task(part.inputs, task.index, task.classes).argmax(-1)]
                hits.append(pred == part.labels)
    if distributed.world() == 1:
        return torch.cat(hits).float().mean().item()
    local = torch.tensor([float(sum(int(h.sum()) for h in hits)), float(sum(len(h) for h in hits))])
    total, count = distributed.all_sum(local).tolist()
    return (torch.tensor(total) / torch.tensor(count)).item()


def best_scores(learner: Learner, inputs, batch_size: int = 1024) -> torch.Tensor:
    """The learner's confidence per input (inputs with no label: out-of-scope queries)."""
    if distributed.world() > 1:
        start, stop = distributed.share(len(inputs))
        with distributed.alone():
            part = best_scores(learner, inputs[start:stop], batch_size)
        return distributed.gather_rows(part.float(), len(inputs))
    out = []
    for s in range(0, len(inputs), batch_size):
        part = inputs[s : s + batch_size]
        out.append(learner.confidence(part, learner.predict(part)))
    return torch.cat(out) if out else torch.zeros(0)


def rejection(learner: Learner, stream: Stream, i: int, test_hits, test_scores) -> dict:
    """Out-of-scope protocol after task i: threshold calibrated on the seen tasks' val split and the out-of-scope
    val queries, then in-scope accuracy (rejections count wrong) and out-of-scope recall on test."""
    val = Examples.concat([t.val for t in stream.tasks[: i + 1] if t.val is not None])
    val_hits, val_scores, _ = accuracy(learner, val)
    threshold = oos.calibrate(val_scores, val_hits, best_scores(learner, stream.oos["val"]))
    result = oos.Rejection.measure(threshold, test_scores, test_hits, best_scores(learner, stream.oos["test"]))
    return dataclasses.asdict(result)


def run(learner: Learner, stream: Stream, on_task_end: Callable[[int, dict], None] | None = None,
        oos_protocol: bool = False) -> dict:
    """Run the stream through the learner; returns the metrics dict that results.json is built from.
    With `oos_protocol` (a stream that has out-of-scope queries), also out-of-scope rejection after every task."""
    T = len(stream)
    with_oos = oos_protocol and bool(stream.oos)
    if oos_protocol and not with_oos:
        raise LifelongError(f"{stream.name} has no out-of-scope queries; --oos needs a benchmark that has them")
    rejections: list[dict] = []
    R: list[list[float | None]] = [[None] * T for _ in range(T)]
    seconds, eval_seconds, stored, peaks, routing, routing_k = [], [], [], [], [], []
    top_k = max(2, getattr(learner.config, "top_k", 2))  # routing is also reported within the top k tasks
    by_class = all(t.classes for t in stream)  # tasks that each bring classes (not domain-incremental)
    for i, task in enumerate(stream):
        log.info("task %d/%d %s: %d classes, %d train examples", i + 1, T, task.name, len(task.classes), len(task.train))
        t0 = time.perf_counter()
        learner.learn(task)
        learner.class_names = list(stream.class_names[: stream.seen_classes(i)])
        seconds.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        seen = [t.test for t in stream.tasks[: i + 1]]
        task_of = torch.cat([torch.full((len(s),), j) for j, s in enumerate(seen)])
        hits, scores, weights = accuracy(learner, Examples.concat(seen),
                                         [t.classes for t in stream.tasks[: i + 1]] if by_class else None)
        for j, part in enumerate(torch.split(hits, [len(s) for s in seen])):
            R[i][j] = part.float().mean().item()
        if by_class:
            routing.append(routed(weights, task_of, 1))
            routing_k.append(routed(weights, task_of, top_k))
        if with_oos:
            rejections.append(rejection(learner, stream, i, hits, scores))
        eval_seconds.append(time.perf_counter() - t0)
        stored.append(learner.stored_bytes())
        peaks.append(peak_memory_mb())
        row = {"task": i, "accuracy": R[i][: i + 1], "seconds": seconds[-1], "stored_bytes": stored[-1],
               "eval_seconds": eval_seconds[-1], "peak_memory_mb": peaks[-1],
               "routing_accuracy": routing[-1] if by_class else None}
        if with_oos:
            row["out_of_scope"] = rejections[-1]
        if on_task_end:
            on_task_end(i, row)

    if by_class:
        t0 = time.perf_counter()
        given_task = accuracy_given_task(learner, stream, T)
        eval_seconds[-1] += time.perf_counter() - t0
    # shared state (a Gram or covariance kept once, growing with nothing or with classes) is reported on its own
    totals = [sum(v for k, v in s.items() if k not in learner.shared_kinds) for s in stored]
    out = metrics.summary(R)
    out.update(
        task_names=[t.name for t in stream],
        bytes_per_task=[totals[0]] + [b - a for a, b in itertools.pairwise(totals)],
        shared_bytes=sum(v for k, v in stored[-1].items() if k in learner.shared_kinds),
        stored_bytes=stored,
        seconds_per_task=seconds,
        eval_seconds_per_task=eval_seconds,
        total_seconds=sum(seconds) + sum(eval_seconds),
        peak_memory_mb=peak_memory_mb(),  # the process so far: the last evaluation after the last task included
        peak_memory_mb_per_task=peaks,
    )
    if with_oos:
        out["out_of_scope"] = rejections[-1]
        out["out_of_scope_per_task"] = rejections
    if by_class:
        out.update(routing_accuracy=routing[-1], routing_accuracy_per_task=routing, routing_top_k=top_k,
                   routing_top_k_accuracy=routing_k[-1], routing_top_k_accuracy_per_task=routing_k,
                   accuracy_given_task=given_task)
    return out
