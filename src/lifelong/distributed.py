"""One code path for 1 or N processes, on torch.distributed (launched by torchrun, or `lifelong run --nproc N`).

Why torch.distributed directly and not a wrapper: a few small collectives carry everything (an all-reduce of the
sums the closed-form methods are made of; an all-gather of features where a method needs them whole; one all-reduce
of gradients per training step; an all-gather of per-example evaluation results); torchrun already gives
rendezvous, multi-node flags and failure handling, and gloo runs it on CPUs.

A method whose state is a sum over examples embeds only its rank's share and adds the sums up (`all_sum`,
`Learner.shard`). Otherwise each rank embeds a contiguous share of the inputs not yet cached, and the shares are
gathered in order, so every rank holds the same features a single process would have computed (up to the rounding
of a different batch shape). Training takes each rank's slice of the same global batch and sums the gradients
weighted by slice size (methods/training.py); evaluation scores each rank's share of the test inputs `alone` and
gathers the per-example results. Only the main rank writes (`is_main`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from . import threads

PEER_FAILED = 3  # exit code of a process stopped because another one failed (the launcher names the other)


def _collective(op, *args) -> None:
    """A collective; when a peer has died it raises here, and this process leaves quietly with PEER_FAILED: the
    failure to report is the peer's (torchrun stops the group and `launch` names it)."""
    try:
        op(*args)
    except RuntimeError:
        raise SystemExit(PEER_FAILED) from None


_alone = 0  # > 0 inside `alone()`


def world() -> int:
    if _alone:
        return 1
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@contextmanager
def alone():
    """Within it this process works as if it were the only one (`world()` is 1, so the caches embed what it asks
    for without sharing or gathering): evaluation scores a different share of the test inputs on each rank, and a
    collective there would wait for ranks that never join it."""
    global _alone
    _alone += 1
    try:
        yield
    finally:
        _alone -= 1


def rank() -> int:
    return dist.get_rank() if world() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device | None = None) -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1 in the environment); nothing otherwise. NCCL when
    the run is on CUDA (each rank on the GPU of its LOCAL_RANK), gloo on CPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")


def teardown() -> None:
    if world() > 1:
        _collective(dist.barrier)
        dist.destroy_process_group()


def share(n: int, r: int | None = None) -> tuple[int, int]:
    """Rank r's (default: this rank's) contiguous [start, stop) of n items; the first n % world ranks take one more."""
    return threads.cut(n, world())[rank() if r is None else r]


def gather_rows(part: torch.Tensor, n: int) -> torch.Tensor:
    """Every rank's `part` (its `share(n)` rows, in rank order) as one [n, ...] tensor on every rank."""
    if world() == 1:
        return part
    longest = -(-n // world())
    padded = torch.zeros((longest, *part.shape[1:]), dtype=part.dtype)
    padded[: len(part)] = part.cpu()
    gloo = dist.get_backend() == "gloo"
    padded = padded if gloo else padded.cuda()
    parts = [torch.empty_like(padded) for _ in range(world())]
    _collective(dist.all_gather, parts, padded)
    sizes = [stop - start for start, stop in (share(n, r) for r in range(world()))]
    return torch.cat([p[:size].cpu() for p, size in zip(parts, sizes)])


def strided(n: int, start: int = 0) -> range:
    """This rank's rows of n in a stride (rank, rank + world, ...): unlike `share`, a row keeps its rank when rows are
    appended, so an evaluation over a growing set (the test data of the tasks seen so far) asks each rank's caches
    only for the new rows. As many rows per rank as `share` gives. With `start`, the n rows are rows start ..
    start + n - 1 of a longer set, and the range indexes them from 0 (a part of that set, in the same stride)."""
    return range((rank() - start) % world(), n, world())


def gather_strided(part: torch.Tensor, n: int) -> torch.Tensor:
    """Every rank's `part` (its `strided(n)` rows) as one [n, ...] tensor in row order, on every rank."""
    if world() == 1:
        return part
    rows = gather_rows(part, n)
    order = torch.cat([torch.arange(r, n, world()) for r in range(world())])
    out = torch.empty_like(rows)
    out[order] = rows
    return out


def _on_wire(t: torch.Tensor) -> torch.Tensor:
    """Where a collective's tensor must live: the CPU for gloo, this rank's GPU for NCCL."""
    return t.cpu() if dist.get_backend() == "gloo" else t.cuda()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of every rank's `t` (same shape everywhere), on every rank, as a CPU tensor."""
    if world() == 1:
        return t
    wire = _on_wire(t.clone())
    _collective(dist.all_reduce, wire)
    return wire.cpu()


def all_sum_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`all_sum` of each tensor of a dict in one collective; each comes back on its own device and dtype."""
    if world() == 1:
        return tensors
    summed = all_sum(torch.cat([t.detach().reshape(-1).double().cpu() for t in tensors.values()]))
    out, offset = {}, 0
    for k, t in tensors.items():
        out[k] = summed[offset : offset + t.numel()].view(t.shape).to(t.device, t.dtype)
        offset += t.numel()
    return out


def any_rank(flags: torch.Tensor) -> torch.Tensor:
    """Bool [n]: True where any rank's `flags` is True."""
    if world() == 1:
        return flags
    return all_sum(flags.to(torch.int32)) > 0


def gather_list(part: list[torch.Tensor], n: int, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> list[torch.Tensor]:
    """Every rank's `part` (its `share(n)` tensors, in rank order) as one list of n on every rank, for rows whose
    shapes differ (a text's hidden states: one row per token). Shapes travel as objects, the values as one flat
    padded tensor per rank, so the rows come back bit for bit; each comes back as a view into its rank's buffer
    (on `device`, else that of `part`, else the CPU), so a gather leaves a few large tensors, not thousands of small ones."""
    if world() == 1:
        return part
    device = device if device is not None else part[0].device if part else torch.device("cpu")
    shapes: list[list[tuple[int, ...]]] = [[] for _ in range(world())]
    _collective(dist.all_gather_object, shapes, [tuple(t.shape) for t in part])
    sizes = [sum(int(torch.Size(s).numel()) for s in ss) for ss in shapes]
    flat = torch.zeros(max(sizes), dtype=dtype)
    if part:
        flat[: sizes[rank()]] = torch.cat([t.detach().reshape(-1).to("cpu", dtype) for t in part])
    wire = _on_wire(flat)
    bufs = [torch.empty_like(wire) for _ in range(world())]
    _collective(dist.all_gather, bufs, wire)
    out: list[torch.Tensor] = []
    for buf, ss, size in zip(bufs, shapes, sizes):
        rows = buf[:size].to(device).split([int(torch.Size(s).numel()) for s in ss])
        out += [r.view(s) for r, s in zip(rows, ss)]
    if len(out) != n:
        raise RuntimeError(f"gathered {len(out)} rows, expected {n}")
    return out


def launch(nproc: int, args: list[str]) -> None:
    """`python -m lifelong.cli ARGS` as `nproc` processes on this machine, through torchrun's own launcher
    (standalone rendezvous on a free port), the CPU threads (LIFELONG_THREADS, else every core) split between them.
    For several machines run torchrun itself with its rendezvous flags (README). A process that fails stops them
    all (torchrun's group) and is one line here."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from .devices import split_threads
    from .errors import LifelongError

    threads = split_threads(nproc)
    os.environ["LIFELONG_THREADS"] = threads
    os.environ.setdefault("OMP_NUM_THREADS", threads)  # else torchrun sets 1, with a warning
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its failure report is a page
    config = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "lifelong.cli",
                                           *args])
    try:
        run(config)
    except ChildFailedError as e:
        failures = sorted(e.failures.items(), key=lambda item: (item[1].exitcode == PEER_FAILED, item[1].timestamp))
        failed, failure = failures[0]
        how = (f"was killed by signal {-failure.exitcode}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        raise LifelongError(f"process {failed} of {nproc} {how}, which stopped the run") from None
