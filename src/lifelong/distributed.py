"""One code path for 1 or N processes, on torch.distributed (launched by torchrun, or `lifelong run --nproc N`).

Why torch.distributed directly and not a wrapper: what is sharded here is the frozen pass, whose result every rank
needs whole (the exemplar-free methods fit closed-form statistics on it), so the one collective is an all-gather of
features; torchrun already gives rendezvous, multi-node flags and failure handling, and gloo runs it on CPUs.

Each rank embeds a contiguous share of the inputs not yet cached; the shares are gathered in order, so every rank
holds the same features a single process would have computed (up to the rounding of a different batch shape) and
then learns and evaluates exactly as one process does. Only the main rank writes (`is_main`).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

PEER_FAILED = 3  # exit code of a process stopped because another one failed (the launcher names the other)


def _collective(op, *args) -> None:
    """A collective; when a peer has died it raises here, and this process leaves quietly with PEER_FAILED: the
    failure to report is the peer's (torchrun stops the group and `launch` names it)."""
    try:
        op(*args)
    except RuntimeError:
        raise SystemExit(PEER_FAILED) from None


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


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
    r = rank() if r is None else r
    size, extra = divmod(n, world())
    start = r * size + min(r, extra)
    return start, start + size + (r < extra)


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
