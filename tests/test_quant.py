"""Quantisers and bit packing: exact round trips, the documented levels, and the straight-through gradient."""

import pytest
import torch

from lifelong.adapters.quant import PRECISIONS, pack, packed_shapes, quantize, unpack


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape", [(8, 16), (3, 7), (1, 1), (384, 8)])
def test_unpack_of_pack_equals_quantised_forward_bit_for_bit(precision, shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 0.3 + 0.05
    packed = pack(w, precision)
    assert torch.equal(unpack(packed, shape, precision), quantize(w, precision))
    spec = packed_shapes(shape, precision)
    assert {k: (tuple(v.shape), v.dtype) for k, v in packed.items()} == spec


def test_one_bit_levels_are_mean_plus_minus_0_6745_std():
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)) + 0.2
    q = quantize(w, "1bit")
    mean, std = w.mean(), w.std(unbiased=False)
    assert sorted(q.unique().tolist()) == pytest.approx([(mean - 0.6745 * std).item(), (mean + 0.6745 * std).item()])
    assert torch.equal(q > mean, w >= mean)


def test_one_bit_storage_is_one_bit_per_weight_plus_two_floats():
    packed = pack(torch.randn(384, 8), "1bit")
    assert sum(t.numel() * t.element_size() for t in packed.values()) == 384 * 8 // 8 + 4 + 4
    packed = pack(torch.randn(3, 3), "1bit")  # 9 bits -> 2 bytes
    assert packed["bits"].numel() == 2


def test_ternary_is_scaled_minus_one_zero_one():
    w = torch.randn(32, 32, generator=torch.Generator().manual_seed(2))
    gamma = w.abs().mean()
    levels = set((quantize(w, "ternary") / gamma).round().unique().tolist())
    assert levels <= {-1.0, 0.0, 1.0} and len(levels) == 3
    assert sum(t.numel() * t.element_size() for t in pack(w, "ternary").values()) == 32 * 32 // 4 + 4


@pytest.mark.parametrize("precision", PRECISIONS)
def test_straight_through_gradient_is_identity(precision):
    w = torch.randn(5, 4, requires_grad=True)
    g = torch.randn(5, 4)
    (quantize(w, precision) * g).sum().backward()
    assert torch.equal(w.grad, g)


def test_unknown_precision():
    from lifelong.adapters.quant import check_precision
    from lifelong.errors import LifelongError

    with pytest.raises(LifelongError, match="unknown precision '2bit'"):
        check_precision("2bit")
