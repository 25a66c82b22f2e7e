"""Issue 12: resident and peak memory while `adapters` learns and is evaluated on CLINC150's first tasks (1 epoch).

Run it with and without a fixed glibc mmap threshold to see the heap growth the CLI avoids (this script does not
go through the CLI, so it gets glibc's dynamic threshold unless MALLOC_MMAP_THRESHOLD_ is set):
    python benchmarks/memory.py;  MALLOC_MMAP_THRESHOLD_=4194304 python benchmarks/memory.py
"""

from __future__ import annotations

import os
import resource
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lifelong import evaluation, methods
from lifelong.backbones import load_backbone
from lifelong.devices import set_threads
from lifelong.data import clinc150
from lifelong.data.task import Examples


def mb() -> tuple[int, int]:
    rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return round(rss), round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main(tasks: int = 4) -> None:
    set_threads()
    learner = methods.get("adapters")(load_backbone(), methods.config_from_dict(methods.get("adapters").Config,
                                                                                {"epochs": 1}))
    stream = clinc150.stream()
    print("loaded: rss/peak MB", mb())
    for i, task in enumerate(stream.tasks[:tasks]):
        t0 = time.perf_counter()
        learner.learn(task)
        seconds = time.perf_counter() - t0
        evaluation.accuracy(learner, Examples.concat([t.test for t in stream.tasks[: i + 1]]))
        print(f"task {i}: learn {seconds:.1f}s, rss/peak MB after learn and evaluation {mb()}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
