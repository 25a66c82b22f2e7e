"""The supervised loop shared by methods that train weights: shuffled mini-batches, AdamW, a progress bar.

Methods differ only in what they train and in an optional extra loss term (a penalty or a distillation), so
they pass a `loss_fn(inputs, labels) -> loss` and the parameter groups; the loop is written once.

With `lengths` (tokens per example), each epoch's shuffled order is cut into pools of `POOL` batches, each pool is
sorted by length and cut into batches, and the batches are shuffled: every batch still draws from a random part of
the data, but pads to a length close to its own, so a text batch wastes little compute on padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

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
) -> list[float]:
    """Minimise `loss_fn` over `examples`; returns the mean loss of each epoch run. `lengths`: see the module doc.
    `after_epoch(epoch)` runs after each epoch and may end training early by returning True."""
    opt = torch.optim.AdamW(param_groups, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = len(examples)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    bar = Progress(steps, desc, "steps")
    history = []
    for epoch in range(epochs):
        total = 0.0
        for index in batch_order(n, batch_size, gen, lengths):
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
