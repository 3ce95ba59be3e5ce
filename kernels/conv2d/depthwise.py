"""Depthwise conv2d (groups == C_in) as direct kernels: no `tl.dot`, no padded channels.

Each output channel co reads one input channel ci = co // mult (mult = C_out / C_in), so the
implicit GEMM would have a reduction of only KH*KW and one output column per group: `tl.dot`'s
16-wide tiles would waste 16x. Here every program owns a (pixels x channels) tile and walks the
KH*KW taps with elementwise multiply-adds.

    forward:      y[n, co, oh, ow]  = b[co] + sum_{kh,kw} x[n, ci, oh*sh-ph+kh*dh, ow*sw-pw+kw*dw]
                                                           * w[co, 0, kh, kw]
    input grad:   dx[n, ci, ih, iw] = sum_{m, kh, kw} dy[n, ci*mult+m, oh, ow]
                                                        * w[ci*mult+m, 0, kh, kw]
                                      with oh = (ih+ph-kh*dh)/sh, ow = (iw+pw-kw*dw)/sw whole and
                                      inside the output (a masked gather, no zero insertion)
    weight grad:  dw[co, 0, kh, kw] = sum_{n,oh,ow} dy[n, co, oh, ow] * x[n, ci, ih, iw]
    bias grad:    db[co]            = sum_{n,oh,ow} dy[n, co, oh, ow]
The weight gradient's long reduction over N*OH*OW is split across programs into partial slots
that the implicit GEMM's second launch sums in a fixed order into dw and db in the weight's own
layout and dtype (deterministic, at most 2 launches; one, writing them directly, when a single
slot fills the GPU).

Autotune keys hold no raw batch or image size, as the implicit GEMM's: the pixel count enters
bucketed by powers of two, and the batch size is not integer-specialised.
"""
import functools

import torch
import triton
import triton.language as tl

from ..activation_math import NONE, activate
from ..activation_slope import joined_slope, slope_parts
from ..runtime import (
    INTERPRET,
    accumulator_dtype,
    cdiv,
    multiprocessor_count,
    output_memory_format,
)
from ..verified_tuning import verified_autotune
from .configs import autotuned, m_bucket
from .epilogue import conv_epilogue
from .forward import forward_results
from .geometry import Conv2dGeometry
from .references import forward_reference, input_grad_reference, weight_grad_reference
from .weight_grad import empty_weight_grads, partial_sum_launch, run_weight_grad

# Pixels x channels per program. The interpreter pays per program, so it gets one tall tile.
DEPTHWISE_TILES_GPU = [(64, 32, 4), (128, 16, 4), (32, 64, 4), (128, 32, 8)]
DEPTHWISE_TILES_INTERPRET = [(4096, 64, 4)]
# With the statistics epilogue every config shares one pixel tile, so the caller knows how many
# partial rows there are.
STATS_BLOCK_P = (DEPTHWISE_TILES_INTERPRET if INTERPRET else DEPTHWISE_TILES_GPU)[0][0]
# The weight gradient's partial slots cover a multiple of every BLOCK_R.
WGRAD_R_MULTIPLE = 4096 if INTERPRET else 128


def _tile_configs(pixels: str):
    return autotuned([triton.Config({pixels: p, "BLOCK_C": c}, num_warps=w) for p, c, w in
                      (DEPTHWISE_TILES_INTERPRET if INTERPRET else DEPTHWISE_TILES_GPU)])


def is_depthwise(geometry: Conv2dGeometry) -> bool:
    """Depthwise: one input channel per group (any channel multiplier), more than one group."""
    return geometry.groups > 1 and geometry.groups == geometry.in_channels


@triton.jit
def split_pixels(offs, H, W):
    """(n as int64, h, w) of flat pixel indices offs = (n*H + h)*W + w."""
    w = offs % W
    h = (offs // W) % H
    n = (offs // (W * H)).to(tl.int64)
    return n, h, w


def _prune_for_stats(configs, named_args, **kwargs):
    if kwargs.get("STATS", named_args.get("STATS", False)):
        return [c for c in configs if c.kwargs["BLOCK_P"] == STATS_BLOCK_P]
    return configs


@verified_autotune(configs=_tile_configs("BLOCK_P"),
                   key=["P_BUCKET", "C_out", "KH", "KW", "MULT", "stride_h", "stride_w", "dil_h",
                        "dil_w", "HAS_BIAS", "STATS", "BN_EVAL", "HAS_RESIDUAL", "ACT"],
                   prune_configs_by={"early_config_prune": _prune_for_stats})
@triton.jit(do_not_specialize=["N", "P_BUCKET"])
def depthwise_forward_kernel(
    # pointers
    x_ptr, w_ptr, b_ptr, y_ptr,
    bn_mean_ptr, bn_var_ptr, bn_weight_ptr, bn_bias_ptr, stats_ptr, res_ptr, pre_ptr,
    # strides
    sxn, sxc, sxh, sxw,
    swo, swh, sww, sb,
    syn, syc, syh, syw,
    srn, src, srh, srw,
    # sizes, the convolution's geometry and scalars
    N, H, W, C_out, OH, OW, KH, KW, MULT,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, eps, slope_hi, slope_lo, P_BUCKET,
    # meta-parameters
    HAS_BIAS: tl.constexpr, STATS: tl.constexpr, BN_EVAL: tl.constexpr,
    BN_AFFINE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACT: tl.constexpr,
    SAVE_PRE: tl.constexpr, ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """The implicit GEMM's epilogue (cnn.kernels.conv2d.epilogue): + bias, per-tile batch-norm
    statistics (STATS: stats[pixel tile, {count, mean, m2}, channel]), folded eval batch norm
    (BN_EVAL), + residual, the activation ACT (the value before it stored to pre when
    SAVE_PRE; pre is laid out as y)."""
    pid_p = tl.program_id(0)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    co = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_p = offs_p < N * OH * OW
    mask_c = co < C_out
    n, oh, ow = split_pixels(offs_p, OH, OW)
    ci = co // MULT
    x_base = x_ptr + (n * sxn)[:, None] + (ci * sxc)[None, :]
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC_DTYPE)
    for kh in range(0, KH):
        ih = oh * stride_h - pad_h + kh * dil_h
        for kw in range(0, KW):
            iw = ow * stride_w - pad_w + kw * dil_w
            inside = mask_p & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            xv = tl.load(x_base + (ih * sxh + iw * sxw)[:, None],
                         mask=inside[:, None] & mask_c[None, :], other=0.0)
            wv = tl.load(w_ptr + co * swo + kh * swh + kw * sww, mask=mask_c, other=0.0)
            acc += xv.to(ACC_DTYPE) * wv.to(ACC_DTYPE)[None, :]
    acc = conv_epilogue(acc, co, mask_p, mask_c, pid_p, C_out, b_ptr, sb, stats_ptr,
                        bn_mean_ptr, bn_var_ptr, bn_weight_ptr, bn_bias_ptr, eps,
                        res_ptr, n * srn + oh * srh + ow * srw, src,
                        HAS_BIAS, STATS, BN_EVAL, BN_AFFINE, HAS_RESIDUAL)
    y_offs = (n * syn + oh * syh + ow * syw)[:, None] + (co * syc)[None, :]
    mask = mask_p[:, None] & mask_c[None, :]
    if SAVE_PRE:
        tl.store(pre_ptr + y_offs, acc.to(pre_ptr.dtype.element_ty), mask=mask)
    acc = activate(acc, joined_slope(slope_hi, slope_lo, ACC_DTYPE), ACT)
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@verified_autotune(configs=_tile_configs("BLOCK_P"),
                   key=["P_BUCKET", "C_in", "KH", "KW", "MULT", "stride_h", "stride_w", "dil_h",
                        "dil_w"])
@triton.jit(do_not_specialize=["N", "P_BUCKET"])
def depthwise_input_grad_kernel(
    # pointers
    dy_ptr, w_ptr, dx_ptr,
    # strides
    sdyn, sdyc, sdyh, sdyw,
    swo, swh, sww,
    sdxn, sdxc, sdxh, sdxw,
    # sizes and the convolution's geometry
    N, C_in, H, W, OH, OW, KH, KW, MULT,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, P_BUCKET,
    # meta-parameters
    ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    ci = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_p = offs_p < N * H * W
    mask_c = ci < C_in
    n, ih, iw = split_pixels(offs_p, H, W)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC_DTYPE)
    for kh in range(0, KH):
        th = ih + pad_h - kh * dil_h
        oh = th // stride_h
        ok_h = (th >= 0) & (oh * stride_h == th) & (oh < OH)
        for kw in range(0, KW):
            tw = iw + pad_w - kw * dil_w
            ow = tw // stride_w
            ok = mask_p & ok_h & (tw >= 0) & (ow * stride_w == tw) & (ow < OW)
            dy_base = dy_ptr + (n * sdyn + oh * sdyh + ow * sdyw)[:, None]
            for m in range(0, MULT):
                co = ci * MULT + m
                dyv = tl.load(dy_base + (co * sdyc)[None, :], mask=ok[:, None] & mask_c[None, :],
                              other=0.0)
                wv = tl.load(w_ptr + co * swo + kh * swh + kw * sww, mask=mask_c, other=0.0)
                acc += dyv.to(ACC_DTYPE) * wv.to(ACC_DTYPE)[None, :]
    dx_ptrs = dx_ptr + (n * sdxn + ih * sdxh + iw * sdxw)[:, None] + (ci * sdxc)[None, :]
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=mask_p[:, None] & mask_c[None, :])


@verified_autotune(configs=_tile_configs("BLOCK_R"),
                   key=["R_BUCKET", "C_out", "KH", "KW", "MULT", "stride_h", "stride_w", "dil_h",
                        "dil_w", "HAS_BIAS"])
@triton.jit(do_not_specialize=["N", "R_PER_SPLIT", "R_BUCKET"])
def depthwise_weight_grad_kernel(
    # pointers
    dy_ptr, x_ptr, dw_ptr, db_ptr,
    # strides
    sdyn, sdyc, sdyh, sdyw,
    sxn, sxc, sxh, sxw,
    sws, swo, swh, sww, sbs,
    # sizes and the convolution's geometry
    N, H, W, C_out, OH, OW, KH, KW, MULT,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, R_PER_SPLIT, R_BUCKET,
    # meta-parameters
    HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Program (channel block, tap kh*KW+kw, split): dw[split, co, 0, kh, kw] at
    dw_ptr + split*sws + co*swo + kh*swh + kw*sww, db[split, co] at db_ptr + split*sbs + co, in
    their pointers' dtypes: the final tensors when there is one split (sws = sbs = 0)."""
    co = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    tap = tl.program_id(1)
    split = tl.program_id(2)
    kh = tap // KW
    kw = tap % KW
    mask_c = co < C_out
    ci = co // MULT
    R = N * OH * OW
    r_start = split * R_PER_SPLIT
    r_end = tl.minimum(R, r_start + R_PER_SPLIT)
    acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=ACC_DTYPE)
    bias_acc = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
    for r0 in range(r_start, r_end, BLOCK_R):
        offs_r = r0 + tl.arange(0, BLOCK_R)
        mask_r = offs_r < r_end
        n, oh, ow = split_pixels(offs_r, OH, OW)
        dyv = tl.load(dy_ptr + (n * sdyn + oh * sdyh + ow * sdyw)[:, None] + (co * sdyc)[None, :],
                      mask=mask_r[:, None] & mask_c[None, :], other=0.0).to(ACC_DTYPE)
        ih = oh * stride_h - pad_h + kh * dil_h
        iw = ow * stride_w - pad_w + kw * dil_w
        inside = mask_r & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        xv = tl.load(x_ptr + (n * sxn + ih * sxh + iw * sxw)[:, None] + (ci * sxc)[None, :],
                     mask=inside[:, None] & mask_c[None, :], other=0.0).to(ACC_DTYPE)
        acc += dyv * xv
        if HAS_BIAS:
            bias_acc += tl.sum(dyv, axis=0)
    tl.store(dw_ptr + split.to(tl.int64) * sws + co * swo + kh * swh + kw * sww,
             tl.sum(acc, axis=0).to(dw_ptr.dtype.element_ty), mask=mask_c)
    if HAS_BIAS:
        if tap == 0:
            tl.store(db_ptr + split * sbs + co, bias_acc.to(db_ptr.dtype.element_ty),
                     mask=mask_c)


def depthwise_forward(x: torch.Tensor, weight: torch.Tensor, bias, geometry: Conv2dGeometry, *,
                      activation: int = NONE, negative_slope: float = 0.0, residual=None,
                      bn_eval=None, stats: bool = False, keep_pre: bool = False):
    """x: (N, C, H, W), weight: (C*mult, 1, KH, KW), bias: (C*mult,) or None
    -> y: (N, C*mult, OH, OW) in x's memory format; then, where asked for, the per-tile
    statistics (tiles, 3, C*mult) and the pre-activation value. activation, negative_slope,
    residual, bn_eval, stats, keep_pre: the epilogues of conv2d_forward."""
    y, stats_buf, grid, args = forward_launch_arguments(
        x, weight, bias, geometry, activation=activation, negative_slope=negative_slope,
        residual=residual, bn_eval=bn_eval, stats=stats, keep_pre=keep_pre)
    if y.numel() > 0:
        depthwise_forward_kernel[grid](**args, reference=functools.partial(
            forward_reference, x, weight, bias, geometry, activation=activation,
            negative_slope=negative_slope, residual=residual, bn_eval=bn_eval,
            stats=stats, keep_pre=keep_pre))
    return forward_results(y, stats_buf, args["pre_ptr"] if keep_pre else None)


def depthwise_input_grad(grad_output: torch.Tensor, weight: torch.Tensor, input: torch.Tensor,
                         geometry: Conv2dGeometry) -> torch.Tensor:
    """dx: (N, C, H, W) in the input's memory format from grad_output (N, C*mult, OH, OW)."""
    grad_input, grid, args = input_grad_launch_arguments(grad_output, weight, input, geometry)
    if grad_input.numel() > 0:
        depthwise_input_grad_kernel[grid](**args, reference=functools.partial(
            input_grad_reference, grad_output, weight, geometry))
    return grad_input


def depthwise_weight_grad(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                          geometry: Conv2dGeometry, need_bias: bool = False):
    """(dw like weight (C*mult, 1, KH, KW) in its layout and dtype, db (C*mult,) or None):
    the partial slots' launch, then (with more than one slot) their sum."""
    return run_weight_grad(*weight_grad_launch_arguments(grad_output, input, weight, geometry,
                                                         need_bias),
                           empty=grad_output.numel() == 0 or input.numel() == 0,
                           reference=functools.partial(weight_grad_reference, grad_output,
                                                       input, weight, geometry, need_bias))


# The launchers' arguments, by name, apart from the launches: the compile check builds its
# cases from them, so it compiles what a launch would.

def _geometry_args(g: Conv2dGeometry) -> dict:
    return dict(N=g.batch, H=g.height, W=g.width, OH=g.out_h, OW=g.out_w, KH=g.kernel_h,
                KW=g.kernel_w, MULT=g.out_per_group, stride_h=g.stride[0], stride_w=g.stride[1],
                pad_h=g.padding[0], pad_w=g.padding[2], dil_h=g.dilation[0], dil_w=g.dilation[1])


def _strides(prefix: str, t: torch.Tensor, axes="nchw") -> dict:
    return {f"s{prefix}{axis}": t.stride(i) for i, axis in enumerate("nchw") if axis in axes}


def forward_launch_arguments(x, weight, bias, geometry: Conv2dGeometry, *, activation=NONE,
                             negative_slope=0.0, residual=None, bn_eval=None, stats=False,
                             keep_pre=False):
    """(y, stats or None, grid, args) of the forward launch. bn_eval: None or (running_mean,
    running_var, gamma or None, beta or None, eps); stats: (tiles of STATS_BLOCK_P pixels, 3,
    C_out), fp32 (fp64 for fp64 input); keep_pre: the pre-activation output is
    args["pre_ptr"]."""
    g = geometry
    y = torch.empty(g.output_shape, device=x.device, dtype=x.dtype,
                    memory_format=output_memory_format(x, weight))
    pre = torch.empty_like(y) if keep_pre else None
    pixels = g.batch * g.out_h * g.out_w
    stats_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    stats_buf = torch.empty((cdiv(pixels, STATS_BLOCK_P), 3, g.out_channels), device=x.device,
                            dtype=stats_dtype) if stats else None
    mean, var, gamma, beta, eps = bn_eval if bn_eval is not None else (None,) * 4 + (0.0,)

    def pointer(t):
        return y if t is None else t  # stands in for an absent tensor; never read then

    args = dict(x_ptr=x, w_ptr=weight, b_ptr=pointer(bias), y_ptr=y, P_BUCKET=m_bucket(pixels),
                bn_mean_ptr=pointer(mean), bn_var_ptr=pointer(var),
                bn_weight_ptr=pointer(gamma), bn_bias_ptr=pointer(beta),
                stats_ptr=pointer(stats_buf), res_ptr=pointer(residual), pre_ptr=pointer(pre),
                **_strides("x", x), swo=weight.stride(0), swh=weight.stride(2),
                sww=weight.stride(3), sb=bias.stride(0) if bias is not None else 0,
                **_strides("y", y), **_strides("r", residual if residual is not None else y),
                C_out=g.out_channels, **_geometry_args(g), eps=float(eps),
                **dict(zip(("slope_hi", "slope_lo"), slope_parts(negative_slope), strict=True)),
                HAS_BIAS=bias is not None, STATS=stats, BN_EVAL=bn_eval is not None,
                BN_AFFINE=gamma is not None, HAS_RESIDUAL=residual is not None, ACT=activation,
                SAVE_PRE=keep_pre, ACC_DTYPE=accumulator_dtype(x.dtype))
    grid = lambda meta: (cdiv(pixels, meta["BLOCK_P"]), cdiv(g.out_channels, meta["BLOCK_C"]))
    return y, stats_buf, grid, args


def input_grad_launch_arguments(grad_output, weight, input, geometry: Conv2dGeometry):
    """(grad_input, grid, args) of the input-gradient launch."""
    g = geometry
    grad_input = torch.empty(input.shape, device=input.device, dtype=input.dtype,
                             memory_format=output_memory_format(input))
    pixels = g.batch * g.height * g.width
    args = dict(dy_ptr=grad_output, w_ptr=weight, dx_ptr=grad_input,
                **_strides("dy", grad_output), swo=weight.stride(0), swh=weight.stride(2),
                sww=weight.stride(3), **_strides("dx", grad_input), C_in=g.in_channels,
                **_geometry_args(g), P_BUCKET=m_bucket(pixels),
                ACC_DTYPE=accumulator_dtype(input.dtype))
    grid = lambda meta: (cdiv(pixels, meta["BLOCK_P"]), cdiv(g.in_channels, meta["BLOCK_C"]))
    return grad_input, grid, args


def weight_grad_launch_arguments(grad_output, input, weight, geometry: Conv2dGeometry,
                                 need_bias=False, sm_count=None, split=None):
    """(grad_weight, grad_bias or None, [(kernel, grid, args), ...]): the partial slots' launch
    and, with more than one slot, the implicit GEMM's sum of them (cnn.kernels.conv2d.weight_grad).
    sm_count: the GPU's multiprocessors (default: input's device's); split: force that many
    slots (tests), default sized to fill the GPU."""
    g = geometry
    r = g.batch * g.out_h * g.out_w
    taps = g.kernel_h * g.kernel_w
    programs = cdiv(g.out_channels, 32) * taps  # nominal: the tiles are autotuned
    sm_count = sm_count or multiprocessor_count(input.device)
    if split is None:
        split = 1 if INTERPRET else max(1, min(2 * sm_count // programs,
                                               cdiv(r, 4 * WGRAD_R_MULTIPLE)))
        per_split = cdiv(cdiv(max(r, 1), split), WGRAD_R_MULTIPLE) * WGRAD_R_MULTIPLE
        split = cdiv(max(r, 1), per_split)
    else:
        per_split = cdiv(max(r, 1), split)
    grad_weight, grad_bias = empty_weight_grads(weight, need_bias)
    if split == 1:  # the one slot is the result
        out_w, out_b, sws, sbs = grad_weight, grad_bias, 0, 0
        swo, _, swh, sww = grad_weight.stride()
    else:  # fp32 (fp64 for fp64) weight partials and fp64 bias partials, as the sum expects
        acc_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
        out_w = torch.empty((split, g.out_channels, g.kernel_h, g.kernel_w, 1),
                            device=input.device, dtype=acc_dtype)
        out_b = torch.empty((split, g.out_channels), device=input.device,
                            dtype=torch.float64) if need_bias else None
        sws, swo, swh, sww, _ = out_w.stride()
        sbs = g.out_channels
    args = dict(dy_ptr=grad_output, x_ptr=input, dw_ptr=out_w,
                db_ptr=out_w if out_b is None else out_b,  # never written without a bias
                **_strides("dy", grad_output), **_strides("x", input),
                sws=sws, swo=swo, swh=swh, sww=sww, sbs=sbs, C_out=g.out_channels,
                **_geometry_args(g), R_PER_SPLIT=per_split, R_BUCKET=m_bucket(r),
                HAS_BIAS=need_bias, ACC_DTYPE=accumulator_dtype(input.dtype))
    grid = lambda meta: (cdiv(g.out_channels, meta["BLOCK_C"]), taps, split)
    launches = [(depthwise_weight_grad_kernel, grid, args)]
    if split > 1:
        launches.append(partial_sum_launch(out_w, out_b, grad_weight, grad_bias, g, split,
                                           input.dtype))
    return grad_weight, grad_bias, launches
