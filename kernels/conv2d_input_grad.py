"""Conv2d input gradient as an implicit GEMM over dY, without a zero-inserted gradient.

Backward of y = conv2d(x, w) with respect to x:
    dx[n, g*Cg + ci, ih, iw] = sum_{co, kh, kw} dy[n, co, oh, ow] * w[co, ci, kh, kw]
        where oh = (ih + ph - kh*dh) / sh and ow = (iw + pw - kw*dw) / sw
        are whole numbers inside the output (otherwise the term is absent).
That is a convolution of dy with the flipped weight. With stride s > 1 the input pixels split
into s_h*s_w phases (ih mod s_h, iw mod s_w); within one phase the same taps kh = kh0 + t*step
(step = s / gcd(s, d)) are whole for every pixel, and oh = ih // s + (ph + pad - kh*d) / s.
So each program works on one phase: a dense GEMM with rows = N * ceil(H/s_h) * ceil(W/s_w) phase
pixels, columns = C_in/groups, reduction = (taps of the phase) * C_out/groups in (kh, kw, co)
order. No term is multiplied by an inserted zero and no dilated copy of dy is built; a phase that
no tap reaches gets zeros.
"""
import math

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


@triton.jit
def _first_tap(phase, pad, dil, stride, step, size):
    """Smallest k in [0, step) with (phase + pad - k*dil) divisible by stride; `size` if none."""
    first = size
    for k in range(0, step):
        hit = (phase + pad - k * dil) % stride == 0
        first = tl.minimum(first, tl.where(hit, k, size))
    return first


@triton.autotune(
    configs=implicit_gemm_configs(),
    key=["N", "H", "W", "OH", "OW", "KH", "KW", "stride_h", "stride_w", "dil_h", "dil_w",
         "C_in_g", "C_out_g", "groups", "INPUT_PRECISION"],
)
@interpreter_tiles(BLOCK_N="C_in_g", BLOCK_K="K")
@triton.jit
def conv2d_input_grad_kernel(
    dy_ptr, w_ptr, dx_ptr,
    sdyn, sdyc, sdyh, sdyw,
    swo, swi, swh, sww,
    sdxn, sdxc, sdxh, sdxw,
    N, H, W, OH, OW, KH, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, step_h, step_w,
    groups, C_in_g, C_out_g, K,
    INDEX_64: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
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
    k_phase = taps_h * taps_w * C_out_g

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    j = (offs_m // WP) % HP
    i = offs_m % WP
    n = offs_m // (WP * HP)
    ih = phase_h + j * stride_h
    iw = phase_w + i * stride_w
    mask_m = (offs_m < N * HP * WP) & (ih < H) & (iw < W)
    mask_n = offs_n < C_in_g
    if INDEX_64:
        n = n.to(tl.int64)
    # Offsets split into a row part (input pixel) and a column part (tap, channel).
    dy_rows = n * sdyn + (group * C_out_g) * sdyc + j * sdyh + i * sdyw
    w_cols = (group * C_out_g) * swo + offs_n * swi

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, k_phase, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < k_phase
        co = offs_k % C_out_g
        kw = kw0 + step_w * ((offs_k // C_out_g) % taps_w)
        kh = kh0 + step_h * (offs_k // (C_out_g * taps_w))
        # Exact divisions: the phase was chosen so these are whole numbers.
        shift_h = (phase_h + pad_h - kh * dil_h) // stride_h
        shift_w = (phase_w + pad_w - kw * dil_w) // stride_w
        # One unsigned compare per axis checks both 0 <= oh and oh < OH.
        oh = (j[:, None] + shift_h[None, :]).to(tl.uint32, bitcast=True)
        ow = (i[:, None] + shift_w[None, :]).to(tl.uint32, bitcast=True)
        dy_mask = mask_m[:, None] & mask_k[None, :] & (oh < OH) & (ow < OW)
        a = tl.load(dy_ptr + (dy_rows[:, None]
                              + (co * sdyc + shift_h * sdyh + shift_w * sdyw)[None, :]),
                    mask=dy_mask, other=0.0)
        b = tl.load(w_ptr + (w_cols[None, :] + (co * swo + kh * swh + kw * sww)[:, None]),
                    mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)

    ci = group * C_in_g + offs_n
    dx_ptrs = dx_ptr + ((n * sdxn + ih * sdxh + iw * sdxw)[:, None] + ci[None, :] * sdxc)
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def conv2d_input_grad(grad_output: torch.Tensor, weight: torch.Tensor, input: torch.Tensor,
                      geometry: Conv2dGeometry) -> torch.Tensor:
    """dx: (N, C_in, H, W) in the input's memory format, from grad_output (N, C_out, OH, OW)
    and weight (C_out, C_in/groups, KH, KW); ``input`` only lends its shape and layout."""
    grad_input, grid, args = launch_arguments(grad_output, weight, input, geometry)
    if grad_input.numel() == 0:
        return grad_input
    if grad_output.numel() == 0:
        return grad_input.zero_()
    conv2d_input_grad_kernel[grid](**args)
    return grad_input


def launch_arguments(grad_output, weight, input, geometry: Conv2dGeometry):
    """Allocate dx and name every kernel argument: (grad_input, grid, args). Separate from the
    launch so the compile check builds exactly what a launch would."""
    g = geometry
    layout = output_memory_format(input, grad_output)
    grad_input = torch.empty(input.shape, device=input.device, dtype=input.dtype,
                             memory_format=layout)
    (sh, sw), (dh, dw) = g.stride, g.dilation
    m = g.batch * cdiv(g.height, sh) * cdiv(g.width, sw)
    args = dict(
        dy_ptr=grad_output, w_ptr=weight, dx_ptr=grad_input,
        **dict(zip(("sdyn", "sdyc", "sdyh", "sdyw"), grad_output.stride(), strict=True)),
        **dict(zip(("swo", "swi", "swh", "sww"), weight.stride(), strict=True)),
        **dict(zip(("sdxn", "sdxc", "sdxh", "sdxw"), grad_input.stride(), strict=True)),
        N=g.batch, H=g.height, W=g.width, OH=g.out_h, OW=g.out_w, KH=g.kernel_h, KW=g.kernel_w,
        stride_h=sh, stride_w=sw, pad_h=g.padding[0], pad_w=g.padding[2], dil_h=dh, dil_w=dw,
        step_h=sh // math.gcd(sh, dh), step_w=sw // math.gcd(sw, dw),
        groups=g.groups, C_in_g=g.in_per_group, C_out_g=g.out_per_group,
        K=g.kernel_h * g.kernel_w * g.out_per_group,
        INDEX_64=needs_int64(grad_output, weight, grad_input),
        ACC_DTYPE=accumulator_dtype(input.dtype), INPUT_PRECISION=dot_precision(input.dtype),
        UPCAST=dot_upcast(input.dtype),
    )
    grid = lambda meta: (cdiv(m, meta["BLOCK_M"]), cdiv(g.in_per_group, meta["BLOCK_N"]),
                         g.groups * sh * sw)
    return grad_input, grid, args

