"""Average pooling, window and adaptive, forward and backward (gather form).

Forward, per plane (n, c) and output (oh, ow), over the window's in-bounds taps:
    y[oh, ow] = (sum_{h, w in window} x[h, w]) / D[oh, ow]
The divisor D, as torch defines it:
    adaptive pooling:        the window's area (every tap is in bounds)
    divisor_override:        that integer
    count_include_pad:       the window's area clipped to the padded input,
                             (min(hs + KH, H + ph) - hs) * (min(ws + KW, W + pw) - ws),
                             with hs = oh*sh - ph, ws = ow*sw - pw (ceil_mode's overhang past
                             the padding does not count)
    otherwise:               the number of in-bounds taps
Sums accumulate in fp32 (fp64 for fp64 input).

Backward:
    dx[h, w] = sum_{(oh, ow) whose window holds (h, w)} dy[oh, ow] / D[oh, ow]
as a gather: each input element visits the outputs that cover it (covering_windows in
pool_geometry), so no atomics, a deterministic result, and overlapping windows just add up.
D factors into one term per axis (or is the constant override, divided out once at the end).
"""
import torch
import triton
import triton.language as tl

from ..host_cache import host_cached
from . import geometry as window
from .geometry import (
    ElementwiseLaunch,
    Pool2dGeometry,
    block_offsets,
    covering_windows,
    flat_to_nchw,
    nchw_offsets,
    pool_window,
)


@triton.jit
def avg_pool2d_extent(o, size_in, size_out, stride, pad, K, ADAPTIVE: tl.constexpr,
                      COUNT_INCLUDE_PAD: tl.constexpr):
    """Output o's factor of the divisor D along one axis: the window's length clipped to the
    padded input (count_include_pad), else its number of in-bounds taps."""
    if ADAPTIVE:
        extent = ((o + 1) * size_in + size_out - 1) // size_out - (o * size_in) // size_out
    else:
        start = o * stride - pad
        if COUNT_INCLUDE_PAD:
            extent = tl.minimum(start + K, size_in + pad) - start
        else:
            extent = tl.minimum(start + K, size_in) - tl.maximum(start, 0)
    return extent


@triton.jit
def avg_pool2d_forward_kernel(
    # pointers
    x_ptr, y_ptr,
    # strides
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    # sizes and the pooling's geometry
    total, C, H, W, OH, OW, KH, KW,
    stride_h, stride_w, pad_h, pad_w, divisor,
    # meta-parameters
    ADAPTIVE: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr, HAS_DIVISOR: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK: tl.constexpr,
):
    offs, mask = block_offsets(total, INDEX_64, BLOCK)
    n, c, oh, ow = flat_to_nchw(offs, C, OH, OW, CHANNELS_LAST)
    h0, kh_lo, kh_hi = pool_window(oh, H, OH, stride_h, pad_h, 1, KH, ADAPTIVE)
    w0, kw_lo, kw_hi = pool_window(ow, W, OW, stride_w, pad_w, 1, KW, ADAPTIVE)
    x_plane = x_ptr + n.to(tl.int64) * sxn + c.to(tl.int64) * sxc

    acc = tl.zeros((BLOCK,), dtype=ACC_DTYPE)
    for kh in range(0, KH):
        row_ok = mask & (kh >= kh_lo) & (kh < kh_hi)
        x_ptrs = x_plane + (h0 + kh) * sxh + w0 * sxw
        for kw in range(0, KW):
            ok = row_ok & (kw >= kw_lo) & (kw < kw_hi)
            acc += tl.load(x_ptrs, mask=ok, other=0.0).to(ACC_DTYPE)
            x_ptrs += sxw
    if HAS_DIVISOR:
        acc = acc / divisor
    else:
        # The divisor is the product of one factor per axis.
        rows = avg_pool2d_extent(oh, H, OH, stride_h, pad_h, KH, ADAPTIVE, COUNT_INCLUDE_PAD)
        cols = avg_pool2d_extent(ow, W, OW, stride_w, pad_w, KW, ADAPTIVE, COUNT_INCLUDE_PAD)
        acc = acc / (rows * cols).to(ACC_DTYPE)

    y_offs = nchw_offsets(n, c, oh, ow, syn, syc, syh, syw)
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def avg_pool2d_backward_kernel(
    # pointers
    dy_ptr, dx_ptr,
    # strides
    sdyn, sdyc, sdyh, sdyw,
    sdxn, sdxc, sdxh, sdxw,
    # sizes and the pooling's geometry
    total, C, H, W, OH, OW, KH, KW,
    stride_h, stride_w, pad_h, pad_w, divisor, JH, JW,
    # meta-parameters
    ADAPTIVE: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr, HAS_DIVISOR: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK: tl.constexpr,
):
    offs, mask = block_offsets(total, INDEX_64, BLOCK)
    n, c, h, w = flat_to_nchw(offs, C, H, W, CHANNELS_LAST)
    oh_lo, oh_count = covering_windows(h, H, OH, stride_h, pad_h, 1, KH, ADAPTIVE)
    ow_lo, ow_count = covering_windows(w, W, OW, stride_w, pad_w, 1, KW, ADAPTIVE)
    dy_plane = dy_ptr + n.to(tl.int64) * sdyn + c.to(tl.int64) * sdyc

    acc = tl.zeros((BLOCK,), dtype=ACC_DTYPE)
    for jh in range(0, JH):
        row_ok = mask & (jh < oh_count)
        oh = oh_lo + jh
        dy_ptrs = dy_plane + oh * sdyh + ow_lo * sdyw
        if HAS_DIVISOR:
            for jw in range(0, JW):
                acc += tl.load(dy_ptrs, mask=row_ok & (jw < ow_count), other=0.0).to(ACC_DTYPE)
                dy_ptrs += sdyw
        else:
            rows = avg_pool2d_extent(oh, H, OH, stride_h, pad_h, KH, ADAPTIVE, COUNT_INCLUDE_PAD)
            for jw in range(0, JW):
                ok = row_ok & (jw < ow_count)
                g = tl.load(dy_ptrs, mask=ok, other=0.0).to(ACC_DTYPE)
                cols = avg_pool2d_extent(ow_lo + jw, W, OW, stride_w, pad_w, KW, ADAPTIVE,
                                         COUNT_INCLUDE_PAD)
                # Outputs past the covering range may have empty windows: divisor 0.
                acc += g / tl.where(ok, rows * cols, 1).to(ACC_DTYPE)
                dy_ptrs += sdyw
    if HAS_DIVISOR:
        acc = acc / divisor

    dx_offs = nchw_offsets(n, c, h, w, sdxn, sdxc, sdxh, sdxw)
    tl.store(dx_ptr + dx_offs, acc.to(dx_ptr.dtype.element_ty), mask=mask)


def _divisor_args(geometry: Pool2dGeometry, count_include_pad: bool, divisor_override):
    """The divisor's constexpr flags and the override (0 when there is none)."""
    return dict(COUNT_INCLUDE_PAD=bool(count_include_pad) and not geometry.adaptive,
                HAS_DIVISOR=divisor_override is not None), int(divisor_override or 0)


def _sizes(g: Pool2dGeometry, numel: int, divisor: int) -> tuple:
    """The kernels' sizes and geometry arguments, from total to divisor."""
    return (numel, g.channels, g.height, g.width, g.out_h, g.out_w, *g.kernel, *g.stride,
            *g.padding, divisor)


@host_cached()
def forward_plan(geometry: Pool2dGeometry, x_strides: tuple, dtype: torch.dtype,
                 count_include_pad: bool, divisor_override, knobs: tuple) -> ElementwiseLaunch:
    """The forward's launch for x of these strides: y's strides in x's memory format, after
    the pointers the scalar arguments from x's strides on."""
    g = geometry
    flags, divisor = _divisor_args(g, count_include_pad, divisor_override)
    fmt = torch.channels_last if window.strided_is_channels_last(g.input_shape, x_strides) \
        else torch.contiguous_format
    return window.plan_elementwise(
        avg_pool2d_forward_kernel, g.output_shape, fmt, dtype,
        lambda y_strides, numel: (*x_strides, *y_strides, *_sizes(g, numel, divisor)),
        dict(ADAPTIVE=g.adaptive, **flags))


@host_cached()
def backward_plan(geometry: Pool2dGeometry, memory_format: torch.memory_format,
                  dtype: torch.dtype, count_include_pad: bool, divisor_override,
                  knobs: tuple) -> ElementwiseLaunch:
    """The backward's launch writing dx in this format: the scalar arguments after dy's
    strides."""
    g = geometry
    flags, divisor = _divisor_args(g, count_include_pad, divisor_override)
    return window.plan_elementwise(
        avg_pool2d_backward_kernel, g.input_shape, memory_format, dtype,
        lambda dx_strides, numel: (*dx_strides, *_sizes(g, numel, divisor), *g.covering),
        dict(ADAPTIVE=g.adaptive, **flags))


def launch_forward(x: torch.Tensor, plan: ElementwiseLaunch) -> torch.Tensor:
    """``avg_pool2d_forward`` with its plan looked up already (``forward_plan``)."""
    y = x.new_empty_strided(plan.shape, plan.strides)  # plan.dtype is x's
    if plan.direct is not None:
        plan.direct(x, y)
    elif plan.grid is not None:
        # .run: kernel[grid](...) without the closure it builds on every call
        avg_pool2d_forward_kernel.run(x, y, *plan.args, **plan.options)
    return y


def launch_backward(grad_output: torch.Tensor, plan: ElementwiseLaunch) -> torch.Tensor:
    """``avg_pool2d_backward`` with its plan looked up already (``backward_plan``)."""
    dx, launch = window.empty_grad_input(plan, grad_output)
    if launch and plan.direct is not None:
        plan.direct(grad_output, dx, *grad_output.stride())
    elif launch:
        avg_pool2d_backward_kernel.run(grad_output, dx, *grad_output.stride(), *plan.args,
                                       **plan.options)
    return dx


def avg_pool2d_forward(x: torch.Tensor, geometry: Pool2dGeometry, count_include_pad=True,
                       divisor_override=None) -> torch.Tensor:
    """x: (N, C, H, W), any strides. Returns y: (N, C, OH, OW) in x's memory format and dtype.
    count_include_pad and divisor_override only apply to window (non-adaptive) geometries."""
    return launch_forward(x, forward_plan(geometry, x.stride(), x.dtype, count_include_pad,
                                          divisor_override, window.knobs()))


def avg_pool2d_backward(grad_output: torch.Tensor, geometry: Pool2dGeometry, like: dict,
                        count_include_pad=True, divisor_override=None) -> torch.Tensor:
    """grad_output: (N, C, OH, OW), any strides (an expanded gradient is fine). Returns
    dx: (N, C, H, W) with ``like``'s dtype, device and memory_format (the forward input's)."""
    return launch_backward(grad_output, backward_plan(
        geometry, like["memory_format"], like["dtype"], count_include_pad, divisor_override,
        window.knobs()))


__all__ = ["avg_pool2d_forward", "avg_pool2d_backward", "avg_pool2d_forward_kernel",
           "avg_pool2d_backward_kernel", "forward_plan", "backward_plan", "launch_forward",
           "launch_backward"]
