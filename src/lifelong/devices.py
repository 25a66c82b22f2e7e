"""Where the backbone runs: `--device auto|cpu|cuda|mps` (auto: CUDA when present, else Apple's MPS, else CPU).

Only modules taken from the backbone move: its frozen blocks and the top blocks a method copies out of it (with
their adapters). They hand back CPU tensors, so everything a method owns (heads, class statistics, Gram matrices)
stays on the CPU, and what is saved is the same whatever the device.
"""

from __future__ import annotations

import contextlib
import os

import torch

from .errors import LifelongError

CHOICES = ("auto", "cpu", "cuda", "mps")
DEVICE_HELP = "Where the backbone runs: auto (CUDA when present, else MPS, else CPU), cpu, cuda, cuda:N or mps."


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """A usable torch device from a setting; a device that is asked for but absent is a one-line error."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":", 1)[0]
    if kind not in CHOICES[1:]:
        raise LifelongError(f"unknown device {name!r}; choose one of {', '.join(CHOICES)} (or cuda:N)")
    if kind == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise LifelongError(f"device {name!r}: no CUDA GPU is visible (torch {torch.__version__}, {build}); "
                            "use --device cpu or auto")
    if kind == "mps" and not _mps():
        raise LifelongError(f"device {name!r}: Apple MPS is not available here; use --device cpu or auto")
    try:
        device = torch.device(name)
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise LifelongError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    except RuntimeError as e:
        raise LifelongError(f"device {name!r}: {e}") from None
    return device


def _mps() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for one with neither)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def split_threads(parts: int) -> str:
    """The CPU threads (LIFELONG_THREADS, else every core) divided between `parts` processes running at once (at
    least one each): for `bench --jobs`, `run --nproc` and `serve --workers`."""
    return str(max(1, int(os.environ.get("LIFELONG_THREADS") or os.cpu_count() or 1) // parts))


def set_threads() -> None:
    """Honour LIFELONG_THREADS (shared CPUs run faster with few, passive threads)."""
    n = os.environ.get("LIFELONG_THREADS")
    if n:
        torch.set_num_threads(int(n))


AUTOCAST_CHOICES = ("auto", "off", "bf16")


def _autocast_setting(setting: str | None) -> str:
    setting = (setting or os.environ.get("LIFELONG_AUTOCAST") or "auto").strip().lower()
    if setting not in AUTOCAST_CHOICES:
        raise LifelongError(f"unknown autocast {setting!r} (LIFELONG_AUTOCAST); choose one of "
                            f"{', '.join(AUTOCAST_CHOICES)}")
    return setting


def frozen_dtype(device: torch.device, setting: str | None = None, modality: str = "text") -> torch.dtype | None:
    """The dtype the frozen backbone computes in (None: fp32), from `setting` or LIFELONG_AUTOCAST (auto | off |
    bf16). auto: on a text backbone, bf16 where the hardware computes it natively (a CUDA GPU that supports it; a
    CPU with AVX-512 BF16 or AMX), else fp32; on an image backbone fp32. Why: a transformer's frozen pass in bf16
    takes about half the time and its features stay within rounding, while a deep convolutional network's drift
    far enough to cost the class model's routing. Only the frozen pass: adapted top blocks in bf16 held much more
    memory (oneDNN keeps a bf16 kernel per input shape) for little time on a CPU; training: see `train_dtype`.
    The measurements are in BENCHMARKS.md, issue 12."""
    setting = _autocast_setting(setting)
    if setting == "off":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if modality != "text":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        native = any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
        return torch.bfloat16 if native else None
    return None


def train_dtype(setting: str | None = None) -> torch.dtype | None:
    """The dtype training computes in under autocast (None: fp32; weights, gradients and optimizer state stay
    fp32 either way), from `setting` or LIFELONG_AUTOCAST: bf16 only when asked for (`bf16`), on any device. Why
    not under `auto`, even on a GPU whose matrix units run bf16 many times faster: adapters trained under bf16
    autocast (on a CPU, the same number format) ended lower on average than fp32 training on three text streams,
    and on a CPU a step was no faster while oneDNN's kernels per input shape held much more memory (BENCHMARKS.md,
    issue 12)."""
    return torch.bfloat16 if _autocast_setting(setting) == "bf16" else None


def dtype_name(dtype: torch.dtype | None) -> str:
    """A compute dtype as results.json, the log and the store's cache name it ("float32" for None, "bfloat16")."""
    return str(dtype).removeprefix("torch.") if dtype is not None else "float32"


def frozen_pass_name(encoder) -> str:
    """An encoder's frozen-pass dtype, named (`dtype_name`)."""
    return dtype_name(getattr(encoder, "frozen_dtype", None))


def training_name(encoder) -> str:
    """An encoder's training dtype (`train_dtype`), named (`dtype_name`)."""
    return dtype_name(getattr(encoder, "train_dtype", None))


def training_pass(encoder):
    """The context a method's trained forward runs in: the encoder's `train_dtype` on its device (nothing when
    training is fp32). The forward's output is the caller's to cast back to fp32 before a CPU head."""
    return computing_in(getattr(encoder, "device", torch.device("cpu")), getattr(encoder, "train_dtype", None))


def computing_in(device: torch.device, dtype: torch.dtype | None):
    """A context computing in `dtype` on `device` (nothing when dtype is None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
