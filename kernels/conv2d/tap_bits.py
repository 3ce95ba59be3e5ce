"""Which taps of a kernel window lie inside the image, as the bits of one int32 per row.

The implicit-GEMM loops walk the taps (kh, kw) of the kernel window and, per tile row, must
skip the taps that fall outside the image (padding). Testing two bounds per row in every step
costs four instructions a row; testing one precomputed bit costs one. Along one axis the
in-bounds taps of a row form one range [lo, hi), so the bits are closed-form, with no loop:
the row range spread over ``taps_w`` bits per kernel row, ANDed with the column range repeated
once per kernel row. No loop also means the compiler can build them in whatever layout the
loads want (a loop-built value is converted through shared memory in every step instead).
Bit t = th*taps_w + tw stands for tap (th, tw); taps_h*taps_w <= 32.
"""
import triton
import triton.language as tl


@triton.jit
def bits_between(lo, hi):
    """int64 with bits lo .. hi-1 set (none when hi <= lo); 0 <= lo, hi <= 32."""
    one = tl.full((), 1, tl.int64)
    return ((one << hi) - 1) & ~((one << lo) - 1)


@triton.jit
def ascending_range(start, size, taps, step):
    """(lo, hi): the taps k < taps with 0 <= start + k*step < size (step >= 1)."""
    lo = tl.minimum((tl.maximum(-start, 0) + step - 1) // step, taps)
    hi = tl.minimum((tl.maximum(size - start, 0) + step - 1) // step, taps)
    return lo, hi


@triton.jit
def descending_range(start, size, taps, step):
    """(lo, hi): the taps k < taps with 0 <= start - k*step < size (step >= 1)."""
    lo = tl.minimum((tl.maximum(start - size + 1, 0) + step - 1) // step, taps)
    hi = tl.minimum(tl.maximum(start + step, 0) // step, taps)
    return lo, hi


@triton.jit
def tap_bits(lo_h, hi_h, lo_w, hi_w, taps_h, taps_w):
    """int32 bits of the taps (th, tw) with lo_h <= th < hi_h and lo_w <= tw < hi_w, bit
    th*taps_w + tw (per row: the ranges are (rows,) tensors, taps_h/taps_w scalars)."""
    repeat = tl.full((), 0, tl.int64)  # bit th*taps_w for every kernel row th
    for th in range(0, taps_h):
        repeat = repeat | (tl.full((), 1, tl.int64) << (th * taps_w))
    bits = bits_between(lo_h * taps_w, hi_h * taps_w) & (bits_between(lo_w, hi_w) * repeat)
    return bits.to(tl.int32)
