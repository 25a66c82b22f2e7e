"""The supervised loop shared by methods that train weights: shuffled mini-batches, AdamW, a progress bar.

Methods differ only in what they train and in an optional extra loss term (a penalty or a distillation), so
they pass a `loss_fn(inputs, labels) -> loss` and the parameter groups; the loop is written once.

With `lengths` (tokens per example), each epoch's shuffled order is cut into pools of `POOL` batches, each pool is
sorted by length and cut into batches, and the batches are shuffled: every batch still draws from a random part of
the data, but pads to a length close to its own, so a text batch wastes little compute on padding.

With several processes (`distributed.world() > 1`) every rank draws the same batches (same seed), takes its
contiguous slice of each (`distributed.share`) and computes the loss on it; the gradients, weighted by slice size,
are summed over the ranks before the optimizer step, which is then the single-process step on the whole batch (up to
float rounding) and the same step on every rank, so the weights stay identical everywhere (`_sliced_step`). With
`workers` > 1 a process's rows are cut the same way into slices computed at once in threads (threads.py), for a
loss that draws no random numbers and shares no mutable state between calls (the top-block methods' eval-mode
blocks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from .. import distributed, threads
from ..data.task import Examples
from ..progress import Progress

POOL = 16  # batches per length-sorted pool (see the module docstring)


def batch_order(n: int, batch_size: int, gen: torch.Generator, lengths: Sequence[int] | None = None) -> list[list[int]]:
    """One epoch's batches of example indices: a random permutation cut in order, or length-pooled batches."""
    order = torch.randperm(n, generator=gen).tolist()
    if lengths is None:
        return [order[s : s + batch_size] for s in range(0, n, batch_size)]
    batches = []
    pool = batch_size * POOL
    for p in range(0, n, pool):
        part = sorted(order[p : p + pool], key=lambda i: lengths[i])
        batches += [part[s : s + batch_size] for s in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def fit(
    examples: Examples,
    loss_fn: Callable[[Sequence, torch.Tensor], torch.Tensor],
    param_groups: list[dict],
    epochs: int,
    batch_size: int,
    seed: int,
    desc: str = "train",
    weight_decay: float = 0.0,
    lengths: Sequence[int] | None = None,
    after_epoch: Callable[[int], bool] | None = None,
    workers: int = 1,
) -> list[float]:
    """Minimise `loss_fn` over `examples`; returns the mean loss of each epoch run. `lengths` and `workers`: see
    the module doc. `after_epoch(epoch)` runs after each epoch and may end training early by returning True."""
    opt = torch.optim.AdamW(param_groups, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = len(examples)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    bar = Progress(steps, desc, "steps")
    history = []
    shared = distributed.world() > 1
    sliced = shared or workers > 1
    params = [p for group in opt.param_groups for p in group["params"]]
    with _rank_random(seed) if shared else contextlib.nullcontext():
        for epoch in range(epochs):
            total = 0.0
            for index in batch_order(n, batch_size, gen, lengths):
                if sliced:
                    value = _sliced_step(examples, index, loss_fn, params, opt, workers)
                    total += value * len(index)
                    bar.update(1, loss=f"{value:.3f}")
                    continue
                batch = examples.select(index)
                loss = loss_fn(batch.inputs, batch.labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
                bar.update(1, loss=f"{loss.item():.3f}")
            history.append(total / max(n, 1))
            if after_epoch is not None and after_epoch(epoch):
                break
    bar.close()
    return history


def statistic_batches(n: int, batch_size: int, seed: int, limit: int) -> tuple[list[list[int]], int]:
    """For a statistic averaged over mini-batches of a task (EWC's Fisher, EKPC's sensitivity): (this process's
    share of the first `limit` batches of a seeded shuffle, the number of batches in all). Each process sums its
    share divided by that number, then `distributed.all_sum_dict` adds the shares up: the single-process mean."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [order[s : s + batch_size] for s in range(0, n, batch_size)][:limit]
    start, stop = distributed.share(len(batches))
    return batches[start:stop], len(batches)


@contextlib.contextmanager
def _rank_random(seed: int):
    """With several processes, each rank draws its own random numbers while training (dropout on its slice), from
    a seed of (`seed`, rank): with one global seed every rank would drop the same units of different examples.
    Afterwards every rank's generators are back where they were, the same on all ranks, so what is drawn later
    (the next task's initial weights) stays identical everywhere."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed * 1_000_003 + distributed.rank() + 1)
        yield


def _sliced_step(examples: Examples, index: list[int], loss_fn, params: list[torch.Tensor], opt,
                 workers: int) -> float:
    """One optimizer step on the global batch `index`, this rank computing the loss on its slice, cut into
    `workers` slices computed at once; returns the batch's mean loss (the same on every rank).

    Each slice's mean loss is weighted by its share of the whole batch, so the sum of the slices' gradients over
    threads and ranks is the gradient of the batch's mean loss (a term that does not depend on the batch, a
    penalty, is counted once in all: its weights sum to 1). With several processes one all-reduce per step carries
    every gradient, which parameters got one (a parameter no rank's loss reached keeps no gradient, as in one
    process, and AdamW leaves it alone), and the loss.

    Why an all-reduce here and not DistributedDataParallel: `fit` trains whatever a method passes as parameter
    groups through a `loss_fn` closure (an adapter and a head over a cache, a whole backbone with an EWC penalty, a
    head on sampled features), not one module whose forward produces the loss, and DDP needs that module (and,
    for parameters used outside its forward, such as a penalty's, would miss their gradients). What DDP adds over
    this, bucketed all-reduces overlapping the backward, matters for large models on many GPUs, not for the
    adapters and heads trained here. The loss runs `alone`: each rank asks its caches for different inputs, so
    they must not share a pass (a rank lacking some rows embeds them itself)."""
    start, stop = distributed.share(len(index))
    grads, local = _slice_grads(examples, index[start:stop], len(index), loss_fn, params, workers)
    if distributed.world() == 1:
        total = local
    else:
        flat = [g.detach().reshape(-1).float().cpu() if g is not None else torch.zeros(p.numel())
                for p, g in zip(params, grads)]
        had = torch.tensor([float(g is not None) for g in grads])
        summed = distributed.all_sum(torch.cat([*flat, had, torch.tensor([local])]))
        flags, total = summed[-1 - len(params) : -1], float(summed[-1])
        grads, offset = [], 0
        for p, flag in zip(params, flags.tolist()):
            size = p.numel()
            grads.append(summed[offset : offset + size].view_as(p).to(p.device, p.dtype).clone() if flag > 0 else None)
            offset += size
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    return total / len(index)


def _slice_grads(examples: Examples, rows: list[int], total: int, loss_fn, params: list[torch.Tensor],
                 workers: int) -> tuple[list[torch.Tensor | None], float]:
    """The gradient of each parameter (None where no slice reached it) of the rows' summed loss over `total`,
    the rows cut into `workers` slices computed at once; and the rows' summed loss."""
    parts = [rows[a:b] for a, b in threads.cut(len(rows), workers) if b > a]
    trainable = [i for i, p in enumerate(params) if p.requires_grad]

    def one(part: list[int]) -> tuple[tuple, float]:
        batch = examples.select(part)
        loss = loss_fn(batch.inputs, batch.labels)
        got = torch.autograd.grad(loss * (len(part) / total), [params[i] for i in trainable], allow_unused=True)
        return got, loss.item() * len(part)

    with distributed.alone():
        results = threads.run(one, parts, workers)
    grads: list[torch.Tensor | None] = [None] * len(params)
    for got, _ in results:
        for i, g in zip(trainable, got):
            if g is not None:
                grads[i] = g if grads[i] is None else grads[i] + g
    return grads, sum(value for _, value in results)
