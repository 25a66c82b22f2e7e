"""Weight precision for adapters: the quantised forward used in training, and the packed form stored on disk.

Training keeps full-precision latent weights and uses their quantised value in the forward pass; the
straight-through estimator passes the gradient to the latent weights unchanged. `pack` stores exactly that
quantised value, and `unpack(pack(w))` equals `quantize(w)` bit for bit, so a loaded adapter computes what the
trained one did.

- `1bit`: w -> mean(w) +- 0.6745 * std(w) by the sign of w - mean(w). 0.6745 = Phi^-1(0.75) is the median of each
  half of a normal, the 1-bit level that minimises absolute error for Gaussian weights. Stored: 1 bit per weight,
  one fp32 mean and one fp32 scale per matrix.
- `ternary` (BitNet b1.58): gamma = mean |w|, w -> gamma * clamp(round(w / gamma), -1, 1). Stored: 2 bits per weight
  and one fp32 scale.
- `fp16`, `fp32`: plain casts.
"""

from __future__ import annotations

import torch

PRECISIONS = ("1bit", "ternary", "fp16", "fp32")
HALF_NORMAL_MEDIAN = 0.6745  # Phi^-1(0.75)
EPS = 1e-8


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        from ..errors import LifelongError

        raise LifelongError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def _levels(w: torch.Tensor, precision: str) -> torch.Tensor:
    """The quantised value of w (no gradient path)."""
    if precision == "1bit":
        mean = w.mean()
        scale = HALF_NORMAL_MEDIAN * w.std(unbiased=False)
        return torch.where(w >= mean, mean + scale, mean - scale)
    if precision == "ternary":
        gamma = w.abs().mean().clamp(min=EPS)
        return torch.clamp(torch.round(w / gamma), -1, 1) * gamma
    if precision == "fp16":
        return w.half().float()
    return w


class _StraightThrough(torch.autograd.Function):
    """Forward: exactly the quantised value (not w + (q - w), which rounds). Backward: identity."""

    @staticmethod
    def forward(ctx, w, precision):
        return _levels(w, precision)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def quantize(w: torch.Tensor, precision: str) -> torch.Tensor:
    """Forward value of the quantised weight; gradient flows to `w` as if quantisation were the identity."""
    if precision == "fp32":
        return w
    return _StraightThrough.apply(w, precision)


def _pack_bits(bits: torch.Tensor, width: int) -> torch.Tensor:
    """Pack small unsigned codes (`width` bits each) into uint8, little-endian within each byte."""
    per_byte = 8 // width
    flat = bits.flatten().to(torch.int32)
    pad = (-len(flat)) % per_byte
    flat = torch.cat([flat, flat.new_zeros(pad)]).view(-1, per_byte)
    shifts = torch.arange(per_byte, dtype=torch.int32) * width
    return (flat << shifts).sum(1).to(torch.uint8)


def _unpack_bits(packed: torch.Tensor, width: int, numel: int) -> torch.Tensor:
    per_byte = 8 // width
    shifts = torch.arange(per_byte, dtype=torch.int32) * width
    codes = (packed.to(torch.int32).unsqueeze(1) >> shifts) & ((1 << width) - 1)
    return codes.flatten()[:numel]


def pack(w: torch.Tensor, precision: str) -> dict[str, torch.Tensor]:
    """The tensors that store quantize(w) exactly, by name suffix."""
    w = w.detach().float()
    if precision == "1bit":
        mean = w.mean()
        scale = HALF_NORMAL_MEDIAN * w.std(unbiased=False)
        return {"bits": _pack_bits(w >= mean, 1), "mean": mean.reshape(1), "scale": scale.reshape(1)}
    if precision == "ternary":
        gamma = w.abs().mean().clamp(min=EPS)
        codes = torch.clamp(torch.round(w / gamma), -1, 1).to(torch.int32) + 1  # {0, 1, 2}
        return {"codes": _pack_bits(codes, 2), "scale": gamma.reshape(1)}
    if precision == "fp16":
        return {"weight": w.half()}
    return {"weight": w}


def unpack(tensors: dict[str, torch.Tensor], shape: tuple[int, ...], precision: str) -> torch.Tensor:
    numel = 1
    for s in shape:
        numel *= s
    if precision == "1bit":
        bits = _unpack_bits(tensors["bits"], 1, numel).bool()
        mean, scale = tensors["mean"][0], tensors["scale"][0]
        return torch.where(bits, mean + scale, mean - scale).view(shape)
    if precision == "ternary":
        codes = _unpack_bits(tensors["codes"], 2, numel).float() - 1
        return (codes * tensors["scale"][0]).view(shape)
    return tensors["weight"].float().view(shape)


def packed_shapes(shape: tuple[int, ...], precision: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """What `pack` produces for a matrix of `shape`: used to validate files before trusting them."""
    numel = 1
    for s in shape:
        numel *= s
    if precision == "1bit":
        return {"bits": (((numel + 7) // 8,), torch.uint8), "mean": ((1,), torch.float32), "scale": ((1,), torch.float32)}
    if precision == "ternary":
        return {"codes": (((numel + 3) // 4,), torch.uint8), "scale": ((1,), torch.float32)}
    return {"weight": (tuple(shape), torch.float16 if precision == "fp16" else torch.float32)}
