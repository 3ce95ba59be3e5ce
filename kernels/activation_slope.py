"""LEAKY_RELU's negative slope as two fp32 kernel arguments, so fp64 kernels use it exactly.

Triton passes a Python float to a kernel as fp32, but torch's fp64 leaky_relu multiplies by the
double slope (0.01 in fp32 is 2e-9 off, relatively). hi = fp32(slope), lo = fp32(slope - hi):
hi + lo carries 48 bits of the slope in fp64 and rounds back to hi, torch's fp32 slope, in fp32.
"""
import numpy as np
import triton
import triton.language as tl


def slope_parts(slope: float) -> tuple[float, float]:
    """(hi, lo) with hi = fp32(slope) and lo = fp32(slope - hi)."""
    hi = float(np.float32(slope))
    return hi, float(np.float32(slope - hi))


@triton.jit
def joined_slope(hi, lo, DTYPE: tl.constexpr):
    """The slope in DTYPE (the accumulator's): hi + lo, added in DTYPE."""
    return (tl.full((), 0, DTYPE) + hi) + lo


__all__ = ["slope_parts", "joined_slope"]
