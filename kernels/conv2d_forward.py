"""Conv2d forward as an implicit GEMM, with a fused epilogue.

    y[n, co, oh, ow] = bias[co] + sum_{ci, kh, kw} x[n, g*Cg + ci, oh*sh - ph + kh*dh,
                                                    ow*sw - pw + kw*dw] * w[co, ci, kh, kw]

GEMM view, per group g: rows M = N*OH*OW (output pixels), columns = C_out/groups, reduction
K = KH*KW*(C_in/groups), flattened in (kh, kw, ci) order so channels_last input is read along
its contiguous channel axis and a 1-channel input still gives `tl.dot` full tiles. The input
tile is gathered straight from x (no im2col buffer); padding is a load mask.

Epilogue, applied to the fp32 accumulator before the single store:
    + bias                     (HAS_BIAS)
    batch-norm statistics      (STATS: per-tile count/mean/M2 of each channel, merged later by
                                Chan's parallel formula, so no E[x^2] - E[x]^2 cancellation)
    * scale + shift            (BN_EVAL: batch norm in evaluation mode folded in, with
                                scale = gamma / sqrt(running_var + eps), shift = beta - mean*scale)
    max(., 0)                  (RELU)
The backward of this kernel lives in conv2d_input_grad.py and conv2d_weight_grad.py.
"""
import torch
import triton
import triton.language as tl

from .configs import implicit_gemm_configs, interpreter_tiles
from .conv2d_geometry import Conv2dGeometry
from .runtime import (
    accumulator_dtype,
    cdiv,
    dot_precision,
    dot_upcast,
    needs_int64,
    output_memory_format,
)

# Statistics are written per row tile, so with STATS every config shares one BLOCK_M and the
# caller knows how many partial rows there are.
STATS_BLOCK_M = implicit_gemm_configs()[0].kwargs["BLOCK_M"]


def _prune_for_stats(configs, named_args, **kwargs):
    if kwargs.get("STATS", named_args.get("STATS", False)):
        return [c for c in configs if c.kwargs["BLOCK_M"] == STATS_BLOCK_M]
    return configs


@triton.autotune(
    configs=implicit_gemm_configs(),
    key=["N", "C_in", "H", "W", "C_out", "OH", "OW", "KH", "KW", "stride_h", "stride_w",
         "dil_h", "dil_w", "groups", "STATS", "CHANNELS_LAST", "INPUT_PRECISION"],
    prune_configs_by={"early_config_prune": _prune_for_stats},
)
@interpreter_tiles(BLOCK_N="C_out_g", BLOCK_K="K")
@triton.jit
def conv2d_forward_kernel(
    x_ptr, w_ptr, y_ptr, bias_ptr,
    bn_mean_ptr, bn_var_ptr, bn_weight_ptr, bn_bias_ptr, stats_ptr,
    sxn, sxc, sxh, sxw,
    swo, swi, swh, sww,
    syn, syc, syh, syw,
    N, C_in, H, W, C_out, OH, OW, KH, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, c_in_g, C_out_g, K, eps,
    INDEX_64: tl.constexpr, HAS_BIAS: tl.constexpr, STATS: tl.constexpr, BN_EVAL: tl.constexpr,
    BN_AFFINE: tl.constexpr, RELU: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2)
    c_out_g = C_out_g
    M = N * OH * OW

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < c_out_g
    ow = offs_m % OW
    oh = (offs_m // OW) % OH
    n = offs_m // (OW * OH)
    ih0 = oh * stride_h - pad_h
    iw0 = ow * stride_w - pad_w
    # Every gathered address and bound splits into a row part (output pixel) and a column part
    # (tap, channel): x[n, ci, ih0 + kh*dh, iw0 + kw*dw] = x_rows[m] + x_cols[k].
    if INDEX_64:
        n = n.to(tl.int64)
    x_rows = n * sxn + (group * c_in_g) * sxc + ih0 * sxh + iw0 * sxw
    co = group * c_out_g + offs_n
    w_cols = co * swo

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        ci = offs_k % c_in_g
        kw = (offs_k // c_in_g) % KW
        kh = offs_k // (c_in_g * KW)
        dh = kh * dil_h
        dw = kw * dil_w
        # One unsigned compare per axis checks both 0 <= ih and ih < H.
        ih = (ih0[:, None] + dh[None, :]).to(tl.uint32, bitcast=True)
        iw = (iw0[:, None] + dw[None, :]).to(tl.uint32, bitcast=True)
        x_mask = mask_m[:, None] & mask_k[None, :] & (ih < H) & (iw < W)
        a = tl.load(x_ptr + (x_rows[:, None] + (ci * sxc + dh * sxh + dw * sxw)[None, :]),
                    mask=x_mask, other=0.0)
        b = tl.load(w_ptr + (w_cols[None, :] + (ci * swi + kh * swh + kw * sww)[:, None]),
                    mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + co, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
    if STATS:
        # Per-tile count, mean and sum of squared deviations of each channel: layout
        # stats[tile, {count, mean, m2}, channel], fp32 (fp64 for fp64 input).
        valid = mask_m[:, None] & mask_n[None, :]
        count = tl.sum(mask_m.to(ACC_DTYPE), axis=0)
        vals = tl.where(valid, acc, 0.0)
        mean = tl.sum(vals, axis=0) / count
        dev = tl.where(valid, vals - mean[None, :], 0.0)
        m2 = tl.sum(dev * dev, axis=0)
        row = stats_ptr + pid_m.to(tl.int64) * 3 * C_out + co
        tl.store(row, tl.zeros_like(mean) + count, mask=mask_n)
        tl.store(row + C_out, mean, mask=mask_n)
        tl.store(row + 2 * C_out, m2, mask=mask_n)
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
    if RELU:
        acc = tl.maximum(acc, 0.0)

    y_ptrs = y_ptr + ((n * syn + oh * syh + ow * syw)[:, None] + co[None, :] * syc)
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def conv2d_forward(x: torch.Tensor, weight: torch.Tensor, bias, geometry: Conv2dGeometry, *,
                   relu: bool = False, bn_eval=None, stats: bool = False):
    """Launch the forward convolution.

    x: (N, C_in, H, W), any strides; weight: (C_out, C_in/groups, KH, KW); bias: (C_out,) or None.
    bn_eval: None or (running_mean, running_var, gamma or None, beta or None, eps), folded
    into the epilogue. stats: also return per-tile statistics, shape (tiles, 3, C_out), fp32
    (fp64 for fp64 input).
    Returns y: (N, C_out, OH, OW) in x's memory format and dtype (and the statistics).
    """
    y, stats_buf, grid, args = launch_arguments(x, weight, bias, geometry, relu=relu,
                                                bn_eval=bn_eval, stats=stats)
    if y.numel() > 0:
        conv2d_forward_kernel[grid](**args)
    return (y, stats_buf) if stats else y


def launch_arguments(x, weight, bias, geometry: Conv2dGeometry, *, relu=False, bn_eval=None,
                     stats=False):
    """Allocate the outputs and name every kernel argument: (y, stats or None, grid, args).
    Separate from the launch so the compile check builds exactly what a launch would."""
    g = geometry
    oh, ow = g.out_h, g.out_w
    layout = output_memory_format(x)
    y = torch.empty(g.output_shape, device=x.device, dtype=x.dtype, memory_format=layout)
    m = g.batch * oh * ow
    stats_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    stats_buf = torch.empty((cdiv(m, STATS_BLOCK_M), 3, g.out_channels), device=x.device,
                            dtype=stats_dtype) if stats else None
    mean, var, gamma, beta, eps = bn_eval if bn_eval is not None else (None,) * 4 + (0.0,)

    def pointer(t):
        return y if t is None else t  # stands in for an absent tensor; never read then

    args = dict(
        x_ptr=x, w_ptr=weight, y_ptr=y, bias_ptr=pointer(bias),
        bn_mean_ptr=pointer(mean), bn_var_ptr=pointer(var), bn_weight_ptr=pointer(gamma),
        bn_bias_ptr=pointer(beta), stats_ptr=pointer(stats_buf),
        **dict(zip(("sxn", "sxc", "sxh", "sxw"), x.stride(), strict=True)),
        **dict(zip(("swo", "swi", "swh", "sww"), weight.stride(), strict=True)),
        **dict(zip(("syn", "syc", "syh", "syw"), y.stride(), strict=True)),
        N=g.batch, C_in=g.in_channels, H=g.height, W=g.width, C_out=g.out_channels, OH=oh, OW=ow,
        KH=g.kernel_h, KW=g.kernel_w, stride_h=g.stride[0], stride_w=g.stride[1],
        pad_h=g.padding[0], pad_w=g.padding[2], dil_h=g.dilation[0], dil_w=g.dilation[1],
        groups=g.groups, c_in_g=g.in_per_group, C_out_g=g.out_per_group,
        K=g.kernel_h * g.kernel_w * g.in_per_group, eps=float(eps),
        INDEX_64=needs_int64(x, y), HAS_BIAS=bias is not None, STATS=stats,
        BN_EVAL=bn_eval is not None, BN_AFFINE=gamma is not None, RELU=relu,
        CHANNELS_LAST=layout == torch.channels_last,  # only keys autotuning: tiles per layout
        ACC_DTYPE=accumulator_dtype(x.dtype), INPUT_PRECISION=dot_precision(x.dtype),
        UPCAST=dot_upcast(x.dtype),
    )
    grid = lambda meta: (cdiv(m, meta["BLOCK_M"]), cdiv(g.out_per_group, meta["BLOCK_N"]),
                         g.groups)
    return y, stats_buf, grid, args


__all__ = ["conv2d_forward", "conv2d_forward_kernel", "STATS_BLOCK_M"]

