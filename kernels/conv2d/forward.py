"""Conv2d forward as an implicit GEMM, with a fused epilogue.

    y[n, co, oh, ow] = bias[co] + sum_{ci, kh, kw} x[n, g*Cg + ci, oh*sh - ph + kh*dh,
                                                    ow*sw - pw + kw*dw] * w[co, ci, kh, kw]

GEMM view, per group g: rows M = N*OH*OW (output pixels), columns = C_out/groups, reduction
K = KH*KW*(C_in/groups). The kernel reads one fast layout whatever the caller's: x as
channels_last (NHWC in memory) and the weight as (C_out, KH, KW, C_in/g); the launcher converts
once per call (a weight is small next to the activations; a cache keyed on the weight's version
would miss writes through ``.data``, as gradcheck and old-style optimizers make). Both are then
contiguous along the channel axis, so their tiles load as 16-byte async copies. The input tile
is gathered straight from x (no im2col buffer); padding is a load mask.

Three reductions, chosen by the launcher:
    tap-major (C_in/groups >= 16)  the K loop walks the taps (kh, kw) and, inside each tap,
        blocks of channels, as a plain GEMM walks K: per step one scalar offset into x and w,
        one (BLOCK_M,) bounds mask for the tap's input row and column (and a channel mask only
        when the channel block does not divide C_in/groups). No per-element index math.
    packed (3 or 4 channels, no groups: RGB first layers)   K runs over (kh, kw, c) with
        whole 4-channel pixels: the launcher pads x to 4 channels (in the copy that makes it
        channels_last anyway when it comes NCHW) and the weight to (C_out, K rounded up to 64)
        with zeros, so each tap of a row is one 8- or 16-byte vector with one bounds check,
        the weight tile a plain GEMM tile, and a small table gives each tap its x offset and
        shifts. K grows by a third for 3 channels; the gathers shrink by three.
    flattened (other counts under 16)   K runs over (kh, kw, ci) flattened, so a 1-channel
        input still fills tl.dot's K tile; a small table built on the host gives each K index
        its x offset and tap shifts (no division in the loop), and the weight is the packed
        path's (C_out, K rounded up to 64) matrix.

Epilogue, applied to the fp32 accumulator before the single store (``cnn.kernels.conv2d.epilogue``,
shared with the depthwise kernel): + bias, per-tile batch-norm statistics (STATS), folded
evaluation batch norm (BN_EVAL), + residual (HAS_RESIDUAL), the activation (ACT; the
pre-activation value also stored when SAVE_PRE, for a backward).
The output is stored in torch's layout for the call (channels_last if x or the weight is), an
NCHW one by vectors along the pixels where the plane allows (``cnn.kernels.conv2d.tile_store``).
The backward of this kernel lives in conv2d_input_grad.py and conv2d_weight_grad.py.
"""
import functools

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ..activation_math import NONE, activate
from ..activation_slope import joined_slope, slope_parts
from ..host_cache import device_table
from ..runtime import (
    accumulator_dtype,
    cdiv,
    dot_precision,
    dot_upcast,
    needs_int64,
    output_memory_format,
    upcast_dot,
)
from ..verified_tuning import verified_autotune
from .configs import (
    K_TABLE_PAD,
    K_TABLE_PAD_,
    TAP_MAJOR_MIN_CHANNELS,
    channel_block,
    implicit_gemm_configs,
    interpreter_tiles,
    k_span,
    m_bucket,
    prune_implicit_gemm,
)
from .epilogue import conv_epilogue
from .geometry import Conv2dGeometry
from .layout import to_channels_last
from .references import forward_reference
from .tap_bits import ascending_range
from .tap_bits import tap_bits as tap_bits_of
from .tap_walk import load_step_tiles, next_step, walk_steps
from .tile_store import nchw_row_vector, store_tile

# Statistics are written per row tile, so with STATS every config shares one BLOCK_M and the
# caller knows how many partial rows there are.
STATS_BLOCK_M = implicit_gemm_configs()[0].kwargs["BLOCK_M"]
# The packed path's tap table is padded to this many taps (K_TABLE_PAD K indices).
TAP_TABLE_PAD_ = tl.constexpr(K_TABLE_PAD // 4)


def _prune(configs, named_args, **kwargs):
    """Before tuning: one BLOCK_M with STATS; tiles no wider than the problem."""
    args = dict(named_args, **kwargs)
    if args.get("STATS", False):
        configs = [c for c in configs if c.kwargs["BLOCK_M"] == STATS_BLOCK_M] or configs
    return prune_implicit_gemm(configs, args, "C_out_g", "x_ptr")


@verified_autotune(
    configs=implicit_gemm_configs(),
    # No batch or image size: M enters bucketed, so a new batch size reuses the tuned tile.
    key=["M_BUCKET", "c_in_g", "C_out_g", "KH", "KW", "stride_h", "stride_w", "dil_h", "dil_w",
         "groups", "STATS", "CHANNELS_LAST", "INPUT_PRECISION"],
    prune_configs_by={"early_config_prune": _prune},
)
@interpreter_tiles(BLOCK_N="C_out_g", BLOCK_K=k_span)
@triton.jit(do_not_specialize=["N", "M_BUCKET"])
def conv2d_forward_kernel(
    # pointers
    x_ptr, w_ptr, y_ptr, bias_ptr,
    bn_mean_ptr, bn_var_ptr, bn_weight_ptr, bn_bias_ptr, stats_ptr, k_table_ptr,
    res_ptr, pre_ptr,
    # strides
    sxn, sxc, sxh, sxw,
    swo, swi, swh, sww,
    syn, syc, syh, syw,
    srn, src, srh, srw,
    sb,
    # sizes, the convolution's geometry and scalars
    N, H, W, C_out, OH, OW, KH, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, c_in_g, C_out_g, K, M_BUCKET, eps,
    slope_hi, slope_lo,
    # meta-parameters
    INDEX_64: tl.constexpr, HAS_BIAS: tl.constexpr, STATS: tl.constexpr, BN_EVAL: tl.constexpr,
    BN_AFFINE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACT: tl.constexpr,
    SAVE_PRE: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    TAP_MAJOR: tl.constexpr, PACKED: tl.constexpr, C_BLOCK: tl.constexpr,
    EVEN_C: tl.constexpr,
    TAP_BITS: tl.constexpr, ROW_VEC: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    # tiles
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """x: channels_last, w: (C_out, KH, KW, c_in_g) in memory: sxc == swi == 1 (the launcher
    guarantees it; the strides stay arguments so that 1 is a compile-time constant).
    Flattened and PACKED (x has 4 channels): w is (C_out, K rounded up to 64), row stride swo.
    Tap-major: the channel block is min(BLOCK_K, C_BLOCK), which divides c_in_g when EVEN_C;
    TAP_BITS: KH*KW <= 32, so each row's in-bounds taps are bits of one int32."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2)
    M = N * OH * OW

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < C_out_g
    # Rows past the end are clamped onto the last one: their loads stay in bounds without a
    # mask and their results are never stored.
    rows = tl.minimum(offs_m, M - 1)
    ow = rows % OW
    oh = (rows // OW) % OH
    n = rows // (OW * OH)
    ih0 = oh * stride_h - pad_h
    iw0 = ow * stride_w - pad_w
    co = group * C_out_g + offs_n
    if INDEX_64:
        n = n.to(tl.int64)
        co = co.to(tl.int64)
    # Every gathered address splits into a row part (output pixel, tap (0, 0), channel 0 of
    # the group) and a column part (tap, channel): x_rows[m] + x_cols[k].
    x_rows = n * sxn + ih0 * sxh + iw0 * sxw + (group * c_in_g) * sxc
    w_cols = co * swo

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    if TAP_MAJOR:
        BK: tl.constexpr = BLOCK_K if BLOCK_K < C_BLOCK else C_BLOCK
        offs_c = tl.arange(0, BK)
        a_ptrs = x_ptr + (x_rows[:, None] + offs_c[None, :] * sxc)
        b_ptrs = w_ptr + (w_cols[None, :] + offs_c[:, None] * swi)
        if TAP_BITS:
            # Built once, so the loop tests one bit per row (against the carried tap_bit)
            # instead of two bounds.
            lo_h, hi_h = ascending_range(ih0, H, KH, dil_h)
            lo_w, hi_w = ascending_range(iw0, W, KW, dil_w)
            tap_bits = tap_bits_of(lo_h, hi_h, lo_w, hi_w, KH, KW)
        # The walk (cnn.kernels.conv2d.tap_walk): x moves dil_h rows per tap row and dil_w
        # columns per tap, w one tap; both by one channel per channel.
        back = (tl.cdiv(c_in_g, BK) - 1) * BK  # from the last channel block to the first
        x_step = tl.full((), 0, tl.int64 if INDEX_64 else tl.int32)
        s_h, s_w, s_c = x_step + sxh, x_step + sxw, x_step + sxc  # x_step's width
        x_next_c, x_next_tap, x_next_row = walk_steps(dil_h * s_h, dil_w * s_w, s_c, back, KW,
                                                      BK)
        w_next_c, w_next_tap, w_next_row = walk_steps(swh, sww, swi, back, KW, BK)
        w_step = tl.full((), 0, tl.int32)
        tap_bit = tl.full((), 1, tl.int32)
        kh = tl.full((), 0, tl.int32)
        kw = tl.full((), 0, tl.int32)
        c0 = tl.full((), 0, tl.int32)
        for _ in range(0, KH * KW * tl.cdiv(c_in_g, BK)):
            if TAP_BITS:
                row_ok = ((tap_bits & tap_bit) != 0)[:, None]
            else:
                # One unsigned compare per axis checks both 0 <= ih and ih < H.
                ih = (ih0 + kh * dil_h).to(tl.uint32, bitcast=True)
                iw = (iw0 + kw * dil_w).to(tl.uint32, bitcast=True)
                row_ok = ((ih < H) & (iw < W))[:, None]
            a, b = load_step_tiles(a_ptrs, b_ptrs, x_step, w_step, row_ok, mask_n, offs_c,
                                   c_in_g - c0, EVEN_C)
            acc = upcast_dot(a, b, acc, UPCAST, INPUT_PRECISION)
            c0, tap_bit, kw, kh, x_step, w_step = next_step(
                c0, tap_bit, kw, kh, x_step, w_step, c_in_g, KW, x_next_c, x_next_tap,
                x_next_row, w_next_c, w_next_tap, w_next_row, BK, not TAP_BITS)
    elif PACKED:
        # Whole 4-channel pixels (see pack_pixels): K index k = tap * 4 + c, and a tap's 4
        # channels are 8 or 16 contiguous, aligned bytes of x, loaded as one vector with one
        # bounds check. The weight is (C_out, K rounded up to 64) with zeros past K, so its
        # tile is a plain GEMM tile.
        offs_t = tl.arange(0, BLOCK_K // 4)
        offs_c4 = tl.arange(0, 4)
        offs_k = tl.arange(0, BLOCK_K)
        t_pad = tl.cdiv(K // 4, TAP_TABLE_PAD_) * TAP_TABLE_PAD_
        # Pixels of 4 channels: every pixel offset is a multiple of 4.
        a_rows = tl.multiple_of(x_rows, 4)
        b_ptrs = w_ptr + (w_cols[None, :] + offs_k[:, None])
        for k0 in range(0, K, BLOCK_K):
            # Table rows: each tap's x offset, row shift and column shift; padded taps carry a
            # row shift that fails the bounds check.
            taps = k_table_ptr + k0 // 4 + offs_t
            x_taps = tl.multiple_of(tl.load(taps), 4)
            ih = (ih0[:, None] + tl.load(taps + t_pad)[None, :]).to(tl.uint32, bitcast=True)
            iw = (iw0[:, None] + tl.load(taps + 2 * t_pad)[None, :]).to(tl.uint32, bitcast=True)
            ok = (ih < H) & (iw < W)
            a = tl.load(x_ptr + (a_rows[:, None, None] + x_taps[None, :, None]
                                 + offs_c4[None, None, :]), mask=ok[:, :, None], other=0.0)
            a = tl.reshape(a, (BLOCK_M, BLOCK_K))
            b = tl.load(b_ptrs + k0, mask=mask_n[None, :], other=0.0)
            acc = upcast_dot(a, b, acc, UPCAST, INPUT_PRECISION)
    else:
        offs_k = tl.arange(0, BLOCK_K)
        k_pad = tl.cdiv(K, K_TABLE_PAD_) * K_TABLE_PAD_
        b_ptrs = w_ptr + (w_cols[None, :] + offs_k[:, None])  # (C_out, K padded) with zeros
        for k0 in range(0, K, BLOCK_K):
            # Table rows: x offset, tap row shift and tap column shift of each K index;
            # padded columns carry a row shift that fails the bounds check.
            cols = k_table_ptr + k0 + offs_k
            x_cols = tl.load(cols)
            dh = tl.load(cols + k_pad)
            dw = tl.load(cols + 2 * k_pad)
            ih = (ih0[:, None] + dh[None, :]).to(tl.uint32, bitcast=True)
            iw = (iw0[:, None] + dw[None, :]).to(tl.uint32, bitcast=True)
            a = tl.load(x_ptr + (x_rows[:, None] + x_cols[None, :]), mask=(ih < H) & (iw < W),
                        other=0.0)
            b = tl.load(b_ptrs + k0, mask=mask_n[None, :], other=0.0)
            acc = upcast_dot(a, b, acc, UPCAST, INPUT_PRECISION)

    acc = conv_epilogue(acc, co, mask_m, mask_n, pid_m, C_out, bias_ptr, sb, stats_ptr,
                        bn_mean_ptr, bn_var_ptr, bn_weight_ptr, bn_bias_ptr, eps,
                        res_ptr, n * srn + oh * srh + ow * srw, src,
                        HAS_BIAS, STATS, BN_EVAL, BN_AFFINE, HAS_RESIDUAL)
    y_rows = n * syn + oh * syh + ow * syw
    if SAVE_PRE:  # pre is laid out as y
        store_tile(pre_ptr, acc.to(pre_ptr.dtype.element_ty), y_rows, co * syc, offs_m, M,
                   mask_m, mask_n, ROW_VEC, CHANNELS_LAST)
    acc = activate(acc, joined_slope(slope_hi, slope_lo, ACC_DTYPE), ACT)
    store_tile(y_ptr, acc.to(y_ptr.dtype.element_ty), y_rows, co * syc,
               offs_m, M, mask_m, mask_n, ROW_VEC, CHANNELS_LAST)


def conv2d_forward(x: torch.Tensor, weight: torch.Tensor, bias, geometry: Conv2dGeometry, *,
                   activation: int = NONE, negative_slope: float = 0.0, residual=None,
                   bn_eval=None, stats: bool = False, keep_pre: bool = False):
    """Launch the forward convolution: y = act(bn_eval(conv2d(x, weight) + bias) + residual).

    x: (N, C_in, H, W), any strides; weight: (C_out, C_in/groups, KH, KW), any strides;
    bias: (C_out,) or None, any stride; residual: None or (N, C_out, OH, OW), any strides.
    activation: an ACT code of ``cnn.kernels.activation_math`` (negative_slope: LEAKY_RELU's).
    bn_eval: None or (running_mean, running_var, gamma or None, beta or None, eps), folded
    into the epilogue. stats: also return per-tile statistics, shape (tiles, 3, C_out), fp32
    (fp64 for fp64 input). keep_pre: also return the pre-activation value, laid out as y.
    Returns y: (N, C_out, OH, OW) in x's dtype, channels_last if x or the weight is (torch's
    rule), else contiguous; then the statistics and pre where asked for: (y, stats, pre).
    """
    y, stats_buf, grid, args = launch_arguments(
        x, weight, bias, geometry, activation=activation, negative_slope=negative_slope,
        residual=residual, bn_eval=bn_eval, stats=stats, keep_pre=keep_pre)
    if y.numel() > 0:
        conv2d_forward_kernel[grid](**args, reference=functools.partial(
            forward_reference, x, weight, bias, geometry, activation=activation,
            negative_slope=negative_slope, residual=residual, bn_eval=bn_eval,
            stats=stats, keep_pre=keep_pre))
    return forward_results(y, stats_buf, args["pre_ptr"] if keep_pre else None)


def forward_results(y, stats_buf, pre):
    """y alone, or (y, stats and/or pre): the forward launchers' return."""
    extra = tuple(t for t in (stats_buf, pre) if t is not None)
    return (y, *extra) if extra else y


@device_table(maxsize=64)
def k_table(kernel_h, kernel_w, channels, dil_h, dil_w, sxc, sxh, sxw, device):
    """The flattened-K loop's table, int32 (3, K padded to K_TABLE_PAD): for each K index
    k = (kh*KW + kw)*channels + ci its x offset, tap row shift kh*dh and tap column shift kw*dw.
    Padded columns get a row shift that no row passes."""
    kh, kw, ci = torch.meshgrid(torch.arange(kernel_h), torch.arange(kernel_w),
                                torch.arange(channels), indexing="ij")
    kh, kw, ci = kh.flatten(), kw.flatten(), ci.flatten()
    table = torch.zeros((3, cdiv(kh.numel(), K_TABLE_PAD) * K_TABLE_PAD), dtype=torch.int64)
    table[1] = -2**30
    columns = torch.stack([kh * dil_h * sxh + kw * dil_w * sxw + ci * sxc, kh * dil_h,
                           kw * dil_w])
    table[:, :kh.numel()] = columns
    if table.abs().max() < 2**31:
        table = table.to(torch.int32)
    return table.to(device)


@device_table(maxsize=64)
def tap_table(kernel_h, kernel_w, dil_h, dil_w, sxh, sxw, device):
    """The packed path's table, int32 (3, taps padded to K_TABLE_PAD / 4): each tap's x offset,
    row shift kh*dh and column shift kw*dw. Padded taps get a row shift that no row passes."""
    kh, kw = torch.meshgrid(torch.arange(kernel_h), torch.arange(kernel_w), indexing="ij")
    kh, kw = kh.flatten(), kw.flatten()
    table = torch.zeros((3, cdiv(kh.numel() * 4, K_TABLE_PAD) * K_TABLE_PAD // 4),
                        dtype=torch.int64)
    table[1] = -2**30
    table[:, :kh.numel()] = torch.stack([kh * dil_h * sxh + kw * dil_w * sxw, kh * dil_h,
                                         kw * dil_w])
    if table.abs().max() < 2**31:
        table = table.to(torch.int32)
    return table.to(device)


def packs_pixels(geometry: Conv2dGeometry) -> bool:
    """Whether the forward reads whole 4-channel pixels: an RGB (or 4-channel) first layer.
    Three channels are padded to four, so K grows by a third, but each tap's pixel becomes one
    aligned vector load and one bounds check instead of three of each."""
    return geometry.groups == 1 and geometry.in_channels in (3, 4)


def flat_weight(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """weight (C_out, C_in/g, KH, KW) -> (C_out, K) with K = KH*KW*channels rounded up to
    K_TABLE_PAD, in (kh, kw, c) order and zero past the real taps and channels (``channels``
    >= C_in/g): the flattened and packed loops' weight, whose tile is then a plain GEMM tile
    with aligned rows and no mask along K."""
    c_out, c_in, kh, kw = weight.shape
    k = kh * kw * channels
    flat = F.pad(weight.permute(0, 2, 3, 1), (0, channels - c_in)).reshape(c_out, k)
    return F.pad(flat, (0, cdiv(k, K_TABLE_PAD) * K_TABLE_PAD - k))


def pack_pixels(x: torch.Tensor) -> torch.Tensor:
    """x (N, 3 or 4, H, W) -> (N, 4, H, W) channels_last, a zero fourth channel (a copy unless
    x already is one)."""
    if x.shape[1] == 3:
        x = F.pad(x.permute(0, 2, 3, 1), (0, 1)).permute(0, 3, 1, 2)
    return to_channels_last(x)


def launch_arguments(x, weight, bias, geometry: Conv2dGeometry, *, activation=NONE,
                     negative_slope=0.0, residual=None, bn_eval=None, stats=False,
                     keep_pre=False):
    """Allocate the outputs and name every kernel argument: (y, stats or None, grid, args),
    with x and the weight already in the kernel's layout (keep_pre: the pre-activation output
    is args["pre_ptr"]). Separate from the launch so the compile check builds exactly what a
    launch would."""
    g = geometry
    oh, ow = g.out_h, g.out_w
    layout = output_memory_format(x, weight)
    y = torch.empty(g.output_shape, device=x.device, dtype=x.dtype, memory_format=layout)
    pre = torch.empty_like(y) if keep_pre else None
    packed = packs_pixels(g)
    tap_major = g.in_per_group >= TAP_MAJOR_MIN_CHANNELS
    if tap_major:
        x, weight = to_channels_last(x), to_channels_last(weight)
    else:
        x = pack_pixels(x) if packed else to_channels_last(x)
        weight = flat_weight(weight, 4 if packed else g.in_per_group)
    m = g.batch * oh * ow
    stats_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    stats_buf = torch.empty((cdiv(m, STATS_BLOCK_M), 3, g.out_channels), device=x.device,
                            dtype=stats_dtype) if stats else None
    mean, var, gamma, beta, eps = bn_eval if bn_eval is not None else (None,) * 4 + (0.0,)
    c_block, even_c = channel_block(g.in_per_group)
    sxn, sxc, sxh, sxw = x.stride()
    if tap_major:
        swo, swi, swh, sww = weight.stride()
        table = None
    else:  # a (C_out, K padded) weight
        swo, swi, swh, sww = weight.stride(0), 1, 0, 0
        table = tap_table(g.kernel_h, g.kernel_w, *g.dilation, sxh, sxw, x.device) if packed \
            else k_table(g.kernel_h, g.kernel_w, g.in_per_group, *g.dilation, sxc, sxh, sxw,
                         x.device)

    def pointer(t):
        return y if t is None else t  # stands in for an absent tensor; never read then

    args = dict(
        x_ptr=x, w_ptr=weight, y_ptr=y, bias_ptr=pointer(bias),
        bn_mean_ptr=pointer(mean), bn_var_ptr=pointer(var), bn_weight_ptr=pointer(gamma),
        bn_bias_ptr=pointer(beta), stats_ptr=pointer(stats_buf), k_table_ptr=pointer(table),
        res_ptr=pointer(residual), pre_ptr=pointer(pre),
        sxn=sxn, sxc=sxc, sxh=sxh, sxw=sxw, swo=swo, swi=swi, swh=swh, sww=sww,
        **dict(zip(("syn", "syc", "syh", "syw"), y.stride(), strict=True)),
        **dict(zip(("srn", "src", "srh", "srw"),
                   residual.stride() if residual is not None else (0,) * 4, strict=True)),
        sb=bias.stride(0) if bias is not None else 1,
        N=g.batch, H=g.height, W=g.width, C_out=g.out_channels, OH=oh, OW=ow,
        KH=g.kernel_h, KW=g.kernel_w, stride_h=g.stride[0], stride_w=g.stride[1],
        pad_h=g.padding[0], pad_w=g.padding[2], dil_h=g.dilation[0], dil_w=g.dilation[1],
        groups=g.groups, c_in_g=g.in_per_group, C_out_g=g.out_per_group,
        K=g.kernel_h * g.kernel_w * (4 if packed else g.in_per_group), M_BUCKET=m_bucket(m),
        eps=float(eps), **dict(zip(("slope_hi", "slope_lo"), slope_parts(negative_slope),
                                   strict=True)),
        INDEX_64=needs_int64(x, weight, y, residual), HAS_BIAS=bias is not None, STATS=stats,
        BN_EVAL=bn_eval is not None, BN_AFFINE=gamma is not None,
        HAS_RESIDUAL=residual is not None, ACT=activation, SAVE_PRE=keep_pre,
        CHANNELS_LAST=layout == torch.channels_last,  # only keys autotuning: the output store
        TAP_MAJOR=tap_major, PACKED=packed, C_BLOCK=c_block, EVEN_C=even_c,
        TAP_BITS=g.kernel_h * g.kernel_w <= 32,  # every tap's bounds fit one int32 per row
        ROW_VEC=nchw_row_vector(y),  # the NCHW output's store vectors (conv2d.tile_store)
        ACC_DTYPE=accumulator_dtype(x.dtype), INPUT_PRECISION=dot_precision(x.dtype),
        UPCAST=dot_upcast(x.dtype),
    )
    grid = lambda meta: (cdiv(m, meta["BLOCK_M"]), cdiv(g.out_per_group, meta["BLOCK_N"]),
                         g.groups)
    return y, stats_buf, grid, args


__all__ = ["conv2d_forward", "conv2d_forward_kernel", "forward_results", "STATS_BLOCK_M"]

