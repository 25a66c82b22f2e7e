"""glibc's heap, set and trimmed: what a long run's resident memory depends on beside its live tensors. Both
calls go through libc with ctypes; on a system without glibc they do nothing."""

from __future__ import annotations

import ctypes
import os


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def fix(size: int = 4 << 20) -> None:
    """glibc serves large blocks from the heap once a freed one has raised its mmap threshold; small long-lived
    allocations (cached hidden states, tensor objects) then pin the heap, and a run's memory grows by the batches it
    has freed. A fixed 4 MB threshold sends the frozen pass's batch buffers back to the system when freed and keeps a
    training step's smaller ones on the heap (64 KB doubled training time; BENCHMARKS.md, issue 12). And one arena:
    glibc gives each thread that allocates its own, and the slices' threads (threads.py) held about 100 MB more
    in theirs for no gain in time. MALLOC_MMAP_THRESHOLD_ and MALLOC_ARENA_MAX win."""
    libc = _glibc()
    if libc is None:
        return
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        libc.mallopt(-3, size)  # M_MMAP_THRESHOLD
    if os.environ.get("MALLOC_ARENA_MAX") is None:
        libc.mallopt(-8, 1)  # M_ARENA_MAX


def trim() -> None:
    """Return the heap's free pages to the system (malloc_trim). Why: glibc keeps the pages of freed blocks below
    the mmap threshold, such as a cleared cache's many small tensors, and allocations from elsewhere (Python's own
    arenas, new mappings: a run's plots) do not reuse them, so they raised a run's peak above its evaluation's
    (BENCHMARKS.md, issue 12)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
