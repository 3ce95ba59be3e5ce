"""The forward convolutions' shared epilogue, applied to a tile's accumulator before its store.

    + bias                     (HAS_BIAS)
    batch-norm statistics      (STATS: per-tile count/mean/M2 of each channel, merged later by
                                Chan's parallel formula, so no E[x^2] - E[x]^2 cancellation)
    * scale + shift            (BN_EVAL: batch norm in evaluation mode folded in, with
                                scale = gamma / sqrt(running_var + eps), shift = beta - mean*scale)
    + residual                 (HAS_RESIDUAL: a tensor of the output's shape, its own strides)
    = pre                      (kept as a second output where a backward needs it)
    act(pre)                   (ACT: ``cnn.kernels.activation_math``; slope for LEAKY_RELU)

Used by the implicit GEMM (``conv2d_forward``) and the depthwise kernel (``conv2d_depthwise``),
so a fused conv + batch norm + activation computes the same thing on either.
"""
import triton
import triton.language as tl

from ..batch_norm.statistics import write_partial


@triton.jit
def conv_epilogue(acc, co, mask_m, mask_n, tile, C_out, bias_ptr, sb, stats_ptr,
                  bn_mean_ptr, bn_var_ptr, bn_weight_ptr, bn_bias_ptr, eps,
                  res_ptr, res_rows, src,
                  HAS_BIAS: tl.constexpr, STATS: tl.constexpr, BN_EVAL: tl.constexpr,
                  BN_AFFINE: tl.constexpr, HAS_RESIDUAL: tl.constexpr):
    """acc: (rows, channels) in the accumulator dtype; co: the channels' indices, mask_m and
    mask_n the live rows and channels. STATS writes stats[tile, {count, mean, m2}, co] (the
    batch-norm partials, ``cnn.kernels.batch_norm.statistics``: (tiles, 3, C_out), fp32 or fp64).
    HAS_RESIDUAL adds res[res_rows[m] + co[n] * src] (res_rows: each row's offset in it).
    Returns the pre-activation accumulator; the caller applies ``activate``."""
    ACC_DTYPE: tl.constexpr = acc.dtype
    if HAS_BIAS:
        acc += tl.load(bias_ptr + co * sb, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
    if STATS:
        valid = mask_m[:, None] & mask_n[None, :]
        write_partial(stats_ptr, tile, tl.where(valid, acc, 0.0), valid, mask_m, co, mask_n,
                      C_out)
    if BN_EVAL:
        mean = tl.load(bn_mean_ptr + co, mask=mask_n, other=0.0).to(ACC_DTYPE)
        var = tl.load(bn_var_ptr + co, mask=mask_n, other=1.0).to(ACC_DTYPE)
        scale = 1.0 / tl.sqrt(var + eps)
        if BN_AFFINE:
            scale *= tl.load(bn_weight_ptr + co, mask=mask_n, other=1.0).to(ACC_DTYPE)
        shift = -mean * scale
        if BN_AFFINE:
            shift += tl.load(bn_bias_ptr + co, mask=mask_n, other=0.0).to(ACC_DTYPE)
        acc = acc * scale[None, :].to(ACC_DTYPE) + shift[None, :].to(ACC_DTYPE)
    if HAS_RESIDUAL:
        acc += tl.load(res_ptr + (res_rows[:, None] + co[None, :] * src),
                       mask=mask_m[:, None] & mask_n[None, :], other=0.0).to(ACC_DTYPE)
    return acc


__all__ = ["conv_epilogue"]
