"""Issue 12: milliseconds per training step of `adapters`' top blocks on CLINC150 task 0's first 640 texts, for
random and length-pooled batches, fp32 and bf16 autocast, 2 and 1 adapted blocks, each batch in one slice or in two
slices at once in threads (threads.py); and the padded-token count. The steps are `training.fit`'s, one epoch each.

Usage: python benchmarks/step_speed.py   (about two minutes on 2 cores)
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

from lifelong.adapters import AdaptedTop, AdapterConfig
from lifelong.backbones import load_backbone
from lifelong.devices import set_threads
from lifelong.data import clinc150
from lifelong.data.task import Examples
from lifelong.methods.topblock import SplitCache, pad
from lifelong.methods.training import batch_order, fit


def main() -> None:
    set_threads()
    enc = load_backbone()
    task = clinc150.stream().tasks[0]
    texts, labels = list(task.train.inputs)[:640], task.train.labels[:640] - min(task.classes)
    for blocks in (2, 1):
        top = AdaptedTop(enc.model, AdapterConfig(blocks=blocks))
        hidden, _ = SplitCache(enc, top.split)(texts)
        lengths = [len(h) for h in hidden]
        for mode in ("random", "pooled"):
            for amp in (False, True):
                for workers in (1, 2):
                    params = top.new_task()
                    top.set_active("train")
                    head = torch.nn.Linear(enc.dim, len(task.classes))
                    groups = [{"params": params + list(head.parameters()), "lr": 3e-3}]
                    order = lengths if mode == "pooled" else None
                    batches = batch_order(len(texts), 32, torch.Generator().manual_seed(0), order)
                    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)

                    def loss_fn(keys, y, amp=amp):
                        h, m = pad([hidden[int(i)] for i in keys])
                        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                            return F.cross_entropy(head(top(h, m)).float(), y)

                    t0 = time.perf_counter()
                    fit(Examples(torch.arange(len(texts)), labels), loss_fn, groups, 1, 32, 0, lengths=order,
                        workers=workers)
                    ms = (time.perf_counter() - t0) / len(batches) * 1000
                    print(f"blocks {blocks} {mode:6s} bf16={amp!s:5s} slices {workers}: {ms:5.1f} ms/step, padded "
                          f"tokens {padded / sum(lengths):.2f}x real")
                    top.freeze()


if __name__ == "__main__":
    main()
