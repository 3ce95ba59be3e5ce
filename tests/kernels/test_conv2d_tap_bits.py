"""cnn.kernels.conv2d.tap_bits' closed-form in-bounds tap bits against a brute-force count of
the taps, over starts on both sides of the image, sizes, kernel extents and tap steps
(dilations)."""
import itertools

import pytest
import torch
import triton
import triton.language as tl
from cnn.kernels.conv2d.tap_bits import ascending_range, descending_range, tap_bits

STARTS = torch.arange(-9, 13, dtype=torch.int32)  # 22 rows: before, inside and past the image


@triton.jit
def _bits_kernel(start_ptr, out_ptr, size, taps_h, taps_w, step, DESCENDING: tl.constexpr,
                 BLOCK: tl.constexpr):
    """out[i, j]: tap bits of the (rows, columns) pair (start[i], start[j]), both axes with the
    same size, step, and taps_h / taps_w taps."""
    offs = tl.arange(0, BLOCK)
    start = tl.load(start_ptr + offs)
    if DESCENDING:
        lo_h, hi_h = descending_range(start, size, taps_h, step)
        lo_w, hi_w = descending_range(start, size, taps_w, step)
    else:
        lo_h, hi_h = ascending_range(start, size, taps_h, step)
        lo_w, hi_w = ascending_range(start, size, taps_w, step)
    # Every (row, column) pair: expand the row ranges down, the column ranges across.
    bits = tap_bits(lo_h[:, None], hi_h[:, None], lo_w[None, :], hi_w[None, :], taps_h, taps_w)
    tl.store(out_ptr + offs[:, None] * BLOCK + offs[None, :], bits)


def _expected(start_h, start_w, size, taps_h, taps_w, step, descending):
    sign = -1 if descending else 1
    bits = 0
    for th, tw in itertools.product(range(taps_h), range(taps_w)):
        if 0 <= start_h + sign * th * step < size and 0 <= start_w + sign * tw * step < size:
            bits |= 1 << (th * taps_w + tw)
    return bits - 2**32 if bits >= 2**31 else bits  # int32 view


@pytest.mark.parametrize("descending", [False, True], ids=["forward", "input_grad"])
@pytest.mark.parametrize("size,taps_h,taps_w,step", [(5, 3, 3, 1), (4, 3, 3, 2), (1, 1, 1, 1),
                                                      (7, 5, 5, 1), (6, 4, 8, 3), (9, 2, 3, 2)])
def test_tap_bits_match_brute_force(size, taps_h, taps_w, step, descending):
    starts = torch.zeros(32, dtype=torch.int32)
    starts[:STARTS.numel()] = STARTS
    out = torch.empty(32, 32, dtype=torch.int32)
    _bits_kernel[(1,)](starts, out, size, taps_h, taps_w, step, DESCENDING=descending, BLOCK=32)
    for i, j in itertools.product(range(STARTS.numel()), repeat=2):
        want = _expected(int(starts[i]), int(starts[j]), size, taps_h, taps_w, step, descending)
        assert int(out[i, j]) == want, (int(starts[i]), int(starts[j]))
