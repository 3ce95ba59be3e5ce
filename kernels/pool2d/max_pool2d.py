"""Max pooling, window and adaptive, forward and backward (gather form).

Forward, per plane (n, c) and output (oh, ow), over the window's taps (see pool_geometry):
    y[oh, ow]   = max_{h, w in window} x[h, w]
    idx[oh, ow] = h*W + w of the chosen tap (torch's convention: a flat index into the plane)
Taps are visited in row-major order and a tap replaces the best so far when it is greater or
NaN, as torch does: ties keep the first maximum, a NaN wins (the last NaN, if several), and a
window of -inf (or one that holds no tap at all, which dilation allows) reports its first
in-bounds position, which may lie past the plane exactly as torch's does.

Backward, the same for window and adaptive pooling:
    dx[h, w] = sum_{(oh, ow) : idx[oh, ow] == h*W + w} dy[oh, ow]
computed as a gather: each input element visits only the outputs whose windows cover it
(pool_geometry.covering_windows) and sums the gradients of those that chose it. No atomics, so
the result is deterministic, and overlapping windows (3x3 stride 2) are handled by the sum.
"""
import torch
import triton
import triton.language as tl

from ..host_cache import host_cached
from .geometry import (
    ElementwiseLaunch,
    Pool2dGeometry,
    block_offsets,
    covering_windows,
    empty_grad_input,
    flat_to_nchw,
    knobs,
    nchw_offsets,
    plan_elementwise,
    pool_window,
    strided_is_channels_last,
)


@triton.jit
def max_pool2d_forward_kernel(
    # pointers
    x_ptr, y_ptr, idx_ptr,
    # strides
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    # sizes and the pooling's geometry
    total, C, H, W, OH, OW, KH, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # meta-parameters
    ADAPTIVE: tl.constexpr, STORE_INDICES: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK: tl.constexpr,
):
    offs, mask = block_offsets(total, INDEX_64, BLOCK)
    # y and idx share one layout, so one flat index in y's memory order addresses both.
    n, c, oh, ow = flat_to_nchw(offs, C, OH, OW, CHANNELS_LAST)
    h0, kh_lo, kh_hi = pool_window(oh, H, OH, stride_h, pad_h, dil_h, KH, ADAPTIVE)
    w0, kw_lo, kw_hi = pool_window(ow, W, OW, stride_w, pad_w, dil_w, KW, ADAPTIVE)
    x_plane = x_ptr + n.to(tl.int64) * sxn + c.to(tl.int64) * sxc
    w_step = dil_w * sxw

    # torch starts from the first in-bounds tap, so an all -inf window reports that tap.
    best = tl.full((BLOCK,), float("-inf"), ACC_DTYPE)
    best_idx = (h0 + kh_lo * dil_h) * W + w0 + kw_lo * dil_w
    for kh in range(0, KH):
        row_ok = mask & (kh >= kh_lo) & (kh < kh_hi)
        h = h0 + kh * dil_h
        x_ptrs = x_plane + h * sxh + w0 * sxw
        tap = h * W + w0  # the tap's flat index in its plane, torch's index convention
        for kw in range(0, KW):
            ok = row_ok & (kw >= kw_lo) & (kw < kw_hi)
            v = tl.load(x_ptrs, mask=ok, other=float("-inf")).to(ACC_DTYPE)
            take = ok & ((v > best) | (v != v))
            best = tl.where(take, v, best)
            best_idx = tl.where(take, tap, best_idx)
            x_ptrs += w_step
            tap += dil_w

    y_offs = nchw_offsets(n, c, oh, ow, syn, syc, syh, syw)
    tl.store(y_ptr + y_offs, best.to(y_ptr.dtype.element_ty), mask=mask)
    if STORE_INDICES:
        tl.store(idx_ptr + y_offs, best_idx.to(tl.int64), mask=mask)


@triton.jit
def max_pool2d_backward_kernel(
    # pointers
    dy_ptr, idx_ptr, dx_ptr,
    # strides
    sdyn, sdyc, sdyh, sdyw,
    sidn, sidc, sidh, sidw,
    sdxn, sdxc, sdxh, sdxw,
    # sizes and the pooling's geometry
    total, C, H, W, OH, OW, KH, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, JH, JW,
    # meta-parameters
    ADAPTIVE: tl.constexpr, CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK: tl.constexpr,
):
    offs, mask = block_offsets(total, INDEX_64, BLOCK)
    n, c, h, w = flat_to_nchw(offs, C, H, W, CHANNELS_LAST)
    oh_lo, oh_count = covering_windows(h, H, OH, stride_h, pad_h, dil_h, KH, ADAPTIVE)
    ow_lo, ow_count = covering_windows(w, W, OW, stride_w, pad_w, dil_w, KW, ADAPTIVE)
    dy_plane = dy_ptr + n.to(tl.int64) * sdyn + c.to(tl.int64) * sdyc
    idx_plane = idx_ptr + n.to(tl.int64) * sidn + c.to(tl.int64) * sidc
    me = h * W + w

    acc = tl.zeros((BLOCK,), dtype=ACC_DTYPE)
    for jh in range(0, JH):
        row_ok = mask & (jh < oh_count)
        oh = oh_lo + jh
        idx_ptrs = idx_plane + oh * sidh + ow_lo * sidw
        dy_ptrs = dy_plane + oh * sdyh + ow_lo * sdyw
        for jw in range(0, JW):
            ok = row_ok & (jw < ow_count)
            chosen = tl.load(idx_ptrs, mask=ok, other=-1)
            acc += tl.load(dy_ptrs, mask=ok & (chosen == me), other=0.0).to(ACC_DTYPE)
            idx_ptrs += sidw
            dy_ptrs += sdyw

    dx_offs = nchw_offsets(n, c, h, w, sdxn, sdxc, sdxh, sdxw)
    tl.store(dx_ptr + dx_offs, acc.to(dx_ptr.dtype.element_ty), mask=mask)


@host_cached()
def forward_plan(geometry: Pool2dGeometry, x_strides: tuple, dtype: torch.dtype,
                 store_indices: bool, knobs: tuple) -> ElementwiseLaunch:
    """The forward's launch for x of these strides: y's (and the indices') strides in x's
    memory format, after the pointers the scalar arguments from x's strides on."""
    g = geometry
    channels_last = strided_is_channels_last(g.input_shape, x_strides)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return plan_elementwise(max_pool2d_forward_kernel, g.output_shape, fmt, dtype,
                            lambda y_strides, numel: (*x_strides, *y_strides,
                                                      *g.kernel_args(numel)),
                            dict(ADAPTIVE=g.adaptive, STORE_INDICES=store_indices))


@host_cached()
def backward_plan(geometry: Pool2dGeometry, memory_format: torch.memory_format,
                  dtype: torch.dtype, knobs: tuple) -> ElementwiseLaunch:
    """The backward's launch writing dx in this format: the scalar arguments after dy's and
    the indices' strides."""
    g = geometry
    return plan_elementwise(max_pool2d_backward_kernel, g.input_shape, memory_format, dtype,
                            lambda dx_strides, numel: (*dx_strides, *g.kernel_args(numel),
                                                       *g.covering),
                            dict(ADAPTIVE=g.adaptive))


def launch_forward(x: torch.Tensor, plan: ElementwiseLaunch, store_indices: bool):
    """``max_pool2d_forward`` with its plan looked up already (``forward_plan``)."""
    y = x.new_empty_strided(plan.shape, plan.strides)  # plan.dtype is x's
    indices = x.new_empty_strided(plan.shape, plan.strides, dtype=torch.int64) \
        if store_indices else None
    if plan.direct is not None:
        plan.direct(x, y, indices if store_indices else y)
    elif plan.grid is not None:
        # .run: kernel[grid](...) without the closure it builds on every call
        max_pool2d_forward_kernel.run(x, y, indices if store_indices else y, *plan.args,
                                      **plan.options)
    return y, indices


def launch_backward(grad_output: torch.Tensor, indices: torch.Tensor,
                    plan: ElementwiseLaunch) -> torch.Tensor:
    """``max_pool2d_backward`` with its plan looked up already (``backward_plan``)."""
    dx, launch = empty_grad_input(plan, grad_output)
    if launch and plan.direct is not None:
        plan.direct(grad_output, indices, dx, *grad_output.stride(), *indices.stride())
    elif launch:
        max_pool2d_backward_kernel.run(grad_output, indices, dx, *grad_output.stride(),
                                       *indices.stride(), *plan.args, **plan.options)
    return dx


def max_pool2d_forward(x: torch.Tensor, geometry: Pool2dGeometry, store_indices: bool = True):
    """x: (N, C, H, W), any strides. Returns y: (N, C, OH, OW) in x's memory format and dtype,
    and indices: int64 of y's shape and layout (None unless store_indices), each a flat
    index into its H*W plane."""
    plan = forward_plan(geometry, x.stride(), x.dtype, store_indices, knobs())
    return launch_forward(x, plan, store_indices)


def max_pool2d_backward(grad_output: torch.Tensor, indices: torch.Tensor,
                        geometry: Pool2dGeometry, like: dict) -> torch.Tensor:
    """grad_output and indices: (N, C, OH, OW), any strides. Returns dx: (N, C, H, W) with
    ``like``'s dtype, device and memory_format (those of the forward's input)."""
    plan = backward_plan(geometry, like["memory_format"], like["dtype"], knobs())
    return launch_backward(grad_output, indices, plan)


__all__ = ["max_pool2d_forward", "max_pool2d_backward", "max_pool2d_forward_kernel",
           "max_pool2d_backward_kernel", "forward_plan", "backward_plan", "launch_forward",
           "launch_backward"]
