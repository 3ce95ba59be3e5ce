"""Conv2d input gradient as an implicit GEMM over dY, without a zero-inserted gradient.

Backward of y = conv2d(x, w) with respect to x:
    dx[n, g*Cg + ci, ih, iw] = sum_{co, kh, kw} dy[n, co, oh, ow] * w[co, ci, kh, kw]
        where oh = (ih + ph - kh*dh) / sh and ow = (iw + pw - kw*dw) / sw
        are whole numbers inside the output (otherwise the term is absent).
That is a convolution of dy with the flipped weight. With stride s > 1 the input pixels split
into s_h*s_w phases (ih mod s_h, iw mod s_w); within one phase the same taps kh = kh0 + t*step
(step = s / gcd(s, d)) are whole for every pixel, and oh = ih // s + (ph + pad - kh*d) / s,
a shift that drops by step*d/s from one tap of the phase to the next.
So each program works on one phase: a dense GEMM with rows = N * ceil(H/s_h) * ceil(W/s_w) phase
pixels, columns = C_in/groups, reduction = (taps of the phase) * C_out/groups. No term is
multiplied by an inserted zero and no dilated copy of dy is built; a phase that no tap reaches
gets zeros.

Layout, as in the forward: dy is read channels_last and the weight as (C_out, KH, KW, C_in/g)
(the launcher converts once per call), so the reduction axis (co) of dy and the column axis (ci)
of the weight are contiguous and both tiles load as 16-byte async copies (under TF32 the weight
is read as (C_in, KH, KW, C_out), see cnn.kernels.conv2d.layout). The reduction runs
tap-major when C_out/groups >= 16 (taps outside, blocks of output channels inside, per-tap
(BLOCK_M,) bounds masks, no per-element index math); with fewer output channels it runs over
(tap, co) flattened through a small per-phase table built on the host.
dx is stored in the input's layout; an NCHW one by vectors along the pixels when the phase is the
whole plane (stride 1; ``cnn.kernels.conv2d.tile_store``).
"""
import functools
import math

import torch
import triton
import triton.language as tl

from .. import runtime
from ..host_cache import device_table
from ..runtime import cdiv, dot_precision, needs_int64, upcast_dot
from ..verified_tuning import verified_autotune
from . import configs as gemm
from .configs import K_TABLE_PAD_
from .geometry import Conv2dGeometry
from .layout import output_channels_last, to_channels_last
from .references import input_grad_reference
from .tap_bits import descending_range
from .tap_bits import tap_bits as tap_bits_of
from .tap_walk import load_step_tiles, next_step, walk_steps
from .tile_store import nchw_row_vector, store_tile


@triton.jit
def _first_tap(phase, pad, dil, stride, step, size):
    """Smallest k in [0, step) with (phase + pad - k*dil) divisible by stride; `size` if none."""
    first = size
    for k in range(0, step):
        hit = (phase + pad - k * dil) % stride == 0
        first = tl.minimum(first, tl.where(hit, k, size))
    return first


def _prune(configs, named_args, **kwargs):
    """Before tuning: tiles no wider than the problem."""
    return gemm.prune_implicit_gemm(configs, dict(named_args, **kwargs), "C_in_g", "dy_ptr")


@verified_autotune(
    configs=gemm.implicit_gemm_configs(),
    # No batch or image size: M enters bucketed, so a new batch size reuses the tuned tile.
    key=["M_BUCKET", "KH", "KW", "stride_h", "stride_w", "dil_h", "dil_w", "C_in_g", "C_out_g",
         "groups", "CHANNELS_LAST", "INPUT_PRECISION"],
    prune_configs_by={"early_config_prune": _prune},
)
@gemm.interpreter_tiles(BLOCK_N="C_in_g", BLOCK_K=gemm.k_span)
@triton.jit(do_not_specialize=["N", "M_BUCKET"])
def conv2d_input_grad_kernel(
    # pointers
    dy_ptr, w_ptr, dx_ptr, k_table_ptr,
    # strides
    sdyn, sdyc, sdyh, sdyw,
    swo, swi, swh, sww,
    sdxn, sdxc, sdxh, sdxw,
    # sizes and the convolution's geometry
    N, H, W, OH, OW, KH, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, step_h, step_w, shift_step_h, shift_step_w,
    groups, C_in_g, C_out_g, K, M_BUCKET,
    # meta-parameters
    INDEX_64: tl.constexpr, TAP_MAJOR: tl.constexpr, C_BLOCK: tl.constexpr,
    EVEN_C: tl.constexpr, TAP_BITS: tl.constexpr, ROW_VEC: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    # tiles
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dy: channels_last, w: (C_out, KH, KW, C_in_g) in memory, or (C_in, KH, KW, C_out) under
    TF32: sdyc == 1 and swi or swo == 1 (the launcher guarantees it; the strides stay arguments
    so that 1 is a compile-time constant).
    Tap-major: the channel block is min(BLOCK_K, C_BLOCK), which divides C_out_g when EVEN_C;
    TAP_BITS: KH*KW <= 32, so each row's in-bounds taps are bits of one int32."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2) // (stride_h * stride_w)
    phase = tl.program_id(2) % (stride_h * stride_w)
    phase_h = phase // stride_w
    phase_w = phase % stride_w
    HP = (H + stride_h - 1) // stride_h
    WP = (W + stride_w - 1) // stride_w

    # The taps that reach this phase: kh = kh0 + step_h * t for t < taps_h (same for kw).
    kh0 = _first_tap(phase_h, pad_h, dil_h, stride_h, step_h, KH)
    kw0 = _first_tap(phase_w, pad_w, dil_w, stride_w, step_w, KW)
    taps_h = tl.where(kh0 < KH, (KH - kh0 + step_h - 1) // step_h, 0)
    taps_w = tl.where(kw0 < KW, (KW - kw0 + step_w - 1) // step_w, 0)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Rows and columns past the end are clamped onto the last one: their loads stay in bounds
    # without a mask and their results are never stored.
    rows = tl.minimum(offs_m, N * HP * WP - 1)
    j = (rows // WP) % HP
    i = rows % WP
    n = rows // (WP * HP)
    ih = phase_h + j * stride_h
    iw = phase_w + i * stride_w
    mask_m = (offs_m < N * HP * WP) & (ih < H) & (iw < W)
    mask_n = offs_n < C_in_g
    co0 = group * C_out_g
    if INDEX_64:
        n = n.to(tl.int64)
        co0 = co0.to(tl.int64)
    # Offsets split into a row part (input pixel, first output channel of the group) and a
    # column part (tap, output channel).
    dy_rows = n * sdyn + j * sdyh + i * sdyw + co0 * sdyc
    w_cols = co0 * swo + offs_n * swi  # not clamped: ci is the weight's contiguous axis

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    if TAP_MAJOR:
        BK: tl.constexpr = BLOCK_K if BLOCK_K < C_BLOCK else C_BLOCK
        offs_c = tl.arange(0, BK)
        a_ptrs = dy_ptr + (dy_rows[:, None] + offs_c[None, :] * sdyc)
        b_ptrs = w_ptr + (w_cols[None, :] + offs_c[:, None] * swo + (kh0 * swh + kw0 * sww))
        w_tap_step_h = step_h * swh
        w_tap_step_w = step_w * sww
        # Exact divisions: the phase was chosen so this is a whole number.
        shift_h0 = (phase_h + pad_h - kh0 * dil_h) // stride_h
        shift_w0 = (phase_w + pad_w - kw0 * dil_w) // stride_w
        if TAP_BITS:
            # Bit t of tap_bits[m]: the phase's tap t = th*taps_w + tw of row m reads inside
            # dy. Built once, so the loop tests one bit per row instead of two bounds.
            # Tap th reads dy row j + shift_h0 - th*shift_step_h (cnn.kernels.conv2d.tap_bits).
            lo_h, hi_h = descending_range(j + shift_h0, OH, taps_h, shift_step_h)
            lo_w, hi_w = descending_range(i + shift_w0, OW, taps_w, shift_step_w)
            tap_bits = tap_bits_of(lo_h, hi_h, lo_w, hi_w, taps_h, taps_w)
        # The walk (cnn.kernels.conv2d.tap_walk) over the phase's taps: one tap further along an
        # axis reads dy shift_step rows (columns) back and w step taps on.
        back = (tl.cdiv(C_out_g, BK) - 1) * BK  # from the last channel block to the first
        dy_step = tl.full((), 0, tl.int64 if INDEX_64 else tl.int32)
        s_h, s_w, s_c = dy_step + sdyh, dy_step + sdyw, dy_step + sdyc  # dy_step's width
        dy_next_c, dy_next_tap, dy_next_row = walk_steps(-shift_step_h * s_h, -shift_step_w * s_w,
                                                         s_c, back, taps_w, BK)
        w_next_c, w_next_tap, w_next_row = walk_steps(w_tap_step_h, w_tap_step_w, swo, back,
                                                      taps_w, BK)
        dy_step += shift_h0 * s_h + shift_w0 * s_w
        w_step = tl.full((), 0, tl.int32)
        th = tl.full((), 0, tl.int32)
        tw = tl.full((), 0, tl.int32)
        tap_bit = tl.full((), 1, tl.int32)  # bit of the current tap in tap_bits
        c0 = tl.full((), 0, tl.int32)
        for _ in range(0, taps_h * taps_w * tl.cdiv(C_out_g, BK)):
            if TAP_BITS:
                row_ok = ((tap_bits & tap_bit) != 0)[:, None]
            else:
                # One unsigned compare per axis checks both 0 <= oh and oh < OH.
                oh = (j + shift_h0 - th * shift_step_h).to(tl.uint32, bitcast=True)
                ow = (i + shift_w0 - tw * shift_step_w).to(tl.uint32, bitcast=True)
                row_ok = ((oh < OH) & (ow < OW))[:, None]
            a, b = load_step_tiles(a_ptrs, b_ptrs, dy_step, w_step, row_ok, mask_n, offs_c,
                                   C_out_g - c0, EVEN_C)
            acc = upcast_dot(a, b, acc, UPCAST, INPUT_PRECISION)
            c0, tap_bit, tw, th, dy_step, w_step = next_step(
                c0, tap_bit, tw, th, dy_step, w_step, C_out_g, taps_w, dy_next_c, dy_next_tap,
                dy_next_row, w_next_c, w_next_tap, w_next_row, BK, not TAP_BITS)
    else:
        offs_k = tl.arange(0, BLOCK_K)
        k_pad = tl.cdiv(K, K_TABLE_PAD_) * K_TABLE_PAD_
        # Table rows of this phase: dy offset, row shift, column shift, w offset of each
        # reduction index; padded columns carry a row shift that fails the bounds check.
        table = k_table_ptr + phase * 4 * k_pad
        for k0 in range(0, taps_h * taps_w * C_out_g, BLOCK_K):
            cols = table + k0 + offs_k
            dy_cols = tl.load(cols)
            shift_h = tl.load(cols + k_pad)
            shift_w = tl.load(cols + 2 * k_pad)
            w_rows = tl.load(cols + 3 * k_pad)
            oh = (j[:, None] + shift_h[None, :]).to(tl.uint32, bitcast=True)
            ow = (i[:, None] + shift_w[None, :]).to(tl.uint32, bitcast=True)
            a = tl.load(dy_ptr + (dy_rows[:, None] + dy_cols[None, :]),
                        mask=(oh < OH) & (ow < OW), other=0.0)
            b = tl.load(w_ptr + (w_cols[None, :] + w_rows[:, None]),
                        mask=(shift_h > -2**29)[:, None] & mask_n[None, :], other=0.0)
            acc = upcast_dot(a, b, acc, UPCAST, INPUT_PRECISION)

    ci = group * C_in_g + offs_n
    store_tile(dx_ptr, acc.to(dx_ptr.dtype.element_ty), n * sdxn + ih * sdxh + iw * sdxw,
               ci * sdxc, offs_m, N * HP * WP, mask_m, mask_n, ROW_VEC, CHANNELS_LAST)


def conv2d_input_grad(grad_output: torch.Tensor, weight: torch.Tensor, input: torch.Tensor,
                      geometry: Conv2dGeometry) -> torch.Tensor:
    """dx: (N, C_in, H, W) in the input's memory format (torch's rule), from grad_output
    (N, C_out, OH, OW) and weight (C_out, C_in/groups, KH, KW), any strides; ``input`` only
    lends its shape and layout."""
    grad_input, grid, args = launch_arguments(grad_output, weight, input, geometry)
    if grad_input.numel() == 0:
        return grad_input
    if grad_output.numel() == 0:
        return grad_input.zero_()
    conv2d_input_grad_kernel[grid](**args, reference=functools.partial(
        input_grad_reference, grad_output, weight, geometry))
    return grad_input


def _phase_taps(phase, pad, dil, stride, size):
    return [k for k in range(size) if (phase + pad - k * dil) % stride == 0]


@device_table(maxsize=64)
def k_table(geometry: Conv2dGeometry, sdyc, sdyh, sdyw, swo, swh, sww, device):
    """The flattened reduction's table, int32 (phases, 4, K padded to K_TABLE_PAD): for each
    phase and reduction index over (kh, kw, co) of the phase's taps, the dy offset, the row
    and column shifts (oh - ih // s) and the w offset. Padded columns get a row shift that
    no row passes."""
    g = geometry
    (sh, sw), (dh, dw), ph, pw = g.stride, g.dilation, g.padding[0], g.padding[2]
    k = g.kernel_h * g.kernel_w * g.out_per_group
    table = torch.zeros((sh * sw, 4, cdiv(k, gemm.K_TABLE_PAD) * gemm.K_TABLE_PAD),
                        dtype=torch.int64)
    table[:, 1] = -2**30
    for p in range(sh * sw):
        rows = []
        for kh in _phase_taps(p // sw, ph, dh, sh, g.kernel_h):
            for kw in _phase_taps(p % sw, pw, dw, sw, g.kernel_w):
                shift_h, shift_w = (p // sw + ph - kh * dh) // sh, (p % sw + pw - kw * dw) // sw
                for co in range(g.out_per_group):
                    rows.append((shift_h * sdyh + shift_w * sdyw + co * sdyc, shift_h, shift_w,
                                 co * swo + kh * swh + kw * sww))
        if rows:
            table[p, :, :len(rows)] = torch.tensor(rows, dtype=torch.int64).t()
    if table.abs().max() < 2**31:
        table = table.to(torch.int32)
    return table.to(device)


def launch_arguments(grad_output, weight, input, geometry: Conv2dGeometry):
    """Allocate dx and name every kernel argument: (grad_input, grid, args), with dy and the
    weight already in the kernel's layout. Separate from the launch so the compile check
    builds exactly what a launch would."""
    g = geometry
    layout = runtime.output_memory_format(input)
    grad_input = torch.empty(input.shape, device=input.device, dtype=input.dtype,
                             memory_format=layout)
    grad_output = to_channels_last(grad_output)
    if dot_precision(input.dtype) == "tf32" and g.groups == 1:
        # TF32 wgmma reads only K-major operands from shared memory, and the reduction here
        # runs over the output channels: the weight as (C_in, KH, KW, C_out) in memory.
        weight = output_channels_last(weight)
    else:
        weight = to_channels_last(weight)
    (sh, sw), (dh, dw) = g.stride, g.dilation
    step_h, step_w = sh // math.gcd(sh, dh), sw // math.gcd(sw, dw)
    m = g.batch * cdiv(g.height, sh) * cdiv(g.width, sw)
    tap_major = g.out_per_group >= gemm.TAP_MAJOR_MIN_CHANNELS
    c_block, even_c = gemm.channel_block(g.out_per_group)
    sdyn, sdyc, sdyh, sdyw = grad_output.stride()
    swo, swi, swh, sww = weight.stride()
    table = None if tap_major else k_table(g.with_batch(1), sdyc, sdyh, sdyw, swo, swh, sww,
                                           grad_output.device)
    args = dict(
        dy_ptr=grad_output, w_ptr=weight, dx_ptr=grad_input,
        k_table_ptr=grad_input if table is None else table,  # never read when tap-major
        sdyn=sdyn, sdyc=sdyc, sdyh=sdyh, sdyw=sdyw, swo=swo, swi=swi, swh=swh, sww=sww,
        **dict(zip(("sdxn", "sdxc", "sdxh", "sdxw"), grad_input.stride(), strict=True)),
        N=g.batch, H=g.height, W=g.width, OH=g.out_h, OW=g.out_w, KH=g.kernel_h, KW=g.kernel_w,
        stride_h=sh, stride_w=sw, pad_h=g.padding[0], pad_w=g.padding[2], dil_h=dh, dil_w=dw,
        step_h=step_h, step_w=step_w, shift_step_h=step_h * dh // sh,
        shift_step_w=step_w * dw // sw,
        groups=g.groups, C_in_g=g.in_per_group, C_out_g=g.out_per_group,
        K=g.kernel_h * g.kernel_w * g.out_per_group, M_BUCKET=gemm.m_bucket(m),
        INDEX_64=needs_int64(grad_output, weight, grad_input),
        TAP_MAJOR=tap_major, C_BLOCK=c_block, EVEN_C=even_c,
        TAP_BITS=g.kernel_h * g.kernel_w <= 32,  # a phase's taps' bounds fit one int32 per row
        # The NCHW dx's store vectors (cnn.kernels.conv2d.tile_store): a stride-1 phase is the
        # whole plane.
        ROW_VEC=nchw_row_vector(grad_input, contiguous_rows=(sh, sw) == (1, 1)),
        CHANNELS_LAST=layout == torch.channels_last,
        ACC_DTYPE=runtime.accumulator_dtype(input.dtype),
        INPUT_PRECISION=dot_precision(input.dtype), UPCAST=runtime.dot_upcast(input.dtype),
    )
    grid = lambda meta: (cdiv(m, meta["BLOCK_M"]), cdiv(g.in_per_group, meta["BLOCK_N"]),
                         g.groups * sh * sw)
    return grad_input, grid, args

