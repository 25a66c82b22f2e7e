"""The supervised loop shared by methods that train weights: shuffled mini-batches, AdamW, a progress bar.

Methods differ only in what they train and in an optional extra loss term (a penalty or a distillation), so
they pass a `loss_fn(inputs, labels) -> loss` and the parameter groups; the loop is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..data.task import Examples


def fit(
    examples: Examples,
    loss_fn: Callable[[Sequence, torch.Tensor], torch.Tensor],
    param_groups: list[dict],
    epochs: int,
    batch_size: int,
    seed: int,
    desc: str = "train",
    weight_decay: float = 0.0,
) -> list[float]:
    """Minimise `loss_fn` over `examples`; returns the mean loss of each epoch."""
    opt = torch.optim.AdamW(param_groups, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = len(examples)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    bar = tqdm(total=steps, desc=desc, unit="step", leave=False)
    history = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(0, n, batch_size):
            batch = examples.select(order[s : s + batch_size].tolist())
            loss = loss_fn(batch.inputs, batch.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        history.append(total / max(n, 1))
    bar.close()
    return history
