"""Slices of one batch computed at once on a CPU, each in its own thread with its share of torch's threads.

Why: torch runs every operation on all its threads, which wait between operations. With OMP_WAIT_POLICY=PASSIVE,
the setting for a shared machine, they sleep and are woken for every operation, and the top blocks on short texts
run many small ones: on 2 cores a training step of `adapters` took 40 ms with 2 threads per operation and 32 ms as
two half-batches at once with one thread each (BENCHMARKS.md, issue 12). A GPU queues its kernels on one stream,
so there it is one slice.

What runs in the threads must not share mutable state between slices; the caller's grad, inference and CPU
autocast modes, which torch keeps per thread, are carried into them. A call from inside a worker runs its items
one after the other (no pool waits on itself).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

MAX_WORKERS = 2  # measured on 2 cores only; with more, the rest of torch's threads go to each slice's operations

_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (workers, torch threads each) -> its pool
_inside = threading.local()
_making = threading.Lock()  # a server's request threads may ask for the pool at once


def workers(device: torch.device | str | None = None) -> int:
    """How many slices to compute at once: up to MAX_WORKERS on a CPU (one per torch thread), 1 elsewhere or
    inside a worker."""
    if device is not None and torch.device(device).type != "cpu":
        return 1
    if getattr(_inside, "worker", False):
        return 1
    return max(1, min(MAX_WORKERS, torch.get_num_threads()))


def cut(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous [start, stop) ranges covering n items, the first n % parts one longer (none empty
    unless n < parts)."""
    size, extra = divmod(n, parts)
    out, start = [], 0
    for p in range(parts):
        stop = start + size + (p < extra)
        out.append((start, stop))
        start = stop
    return out


def run(fn: Callable, items: Sequence, count: int | None = None) -> list:
    """`[fn(item) for item in items]`, `count` (default `workers()`) at a time, results in order."""
    count = workers() if count is None else count
    if count <= 1 or len(items) <= 1 or getattr(_inside, "worker", False):
        return [fn(item) for item in items]
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None

    def call(item):
        mode = torch.inference_mode() if inference else torch.set_grad_enabled(grad)
        cast = torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext()
        with mode, cast:
            return fn(item)

    return list(_executor(count).map(call, items))


def _executor(count: int) -> ThreadPoolExecutor:
    """The pool of `count` threads that each run torch with `torch.get_num_threads() // count` threads (made once
    per pair of numbers)."""
    total = torch.get_num_threads()
    key = (count, max(1, total // count))
    with _making:
        if key not in _pools:
            _pools[key] = _start(key)
            torch.set_num_threads(total)  # it also set the count new threads start with: back to the caller's
        return _pools[key]


def _start(key: tuple[int, int]) -> ThreadPoolExecutor:
    count, each = key
    ready = threading.Barrier(count)

    def start() -> None:
        torch.get_num_threads()  # torch's first call in a thread copies the process's count in; then set our own
        torch.set_num_threads(each)
        _inside.worker = True
        ready.wait()  # every thread starts now: one idle thread must not take a second start

    pool = ThreadPoolExecutor(count, thread_name_prefix="lifelong-slice")
    for f in [pool.submit(start) for _ in range(count)]:
        f.result()
    return pool
