"""The sizes of one 2D pooling, and the window arithmetic its kernels share.

Along one axis (input size I, output size O), output o pools the taps ``start + k*step`` for
``k < span`` that lie in ``[0, end)``, i.e. for k in [k_lo, k_hi) (so inner loops test k
against per-element bounds instead of recomputing positions):

    window pooling:    start = o*s - p,             step = d, span = K,
                       end = min(start + (K-1)*d + 1, I)
    adaptive pooling:  start = floor(o*I / O),       step = 1, span = max_o(end - start),
                       end = ceil((o+1)*I / O)
(an adaptive geometry stores its span as the kernel and step 1 as the dilation).

Backward kernels gather instead of scattering: input i reads every output o whose window
covers it, o in [lo, hi] (again per-element bounds on a loop counter):

    window pooling:    lo = ceil((i + p - (K-1)*d) / s) clamped to >= 0,
                       hi = floor((i + p) / s) clamped to <= O-1
    adaptive pooling:  lo = floor(i*O / I),   hi = ceil((i+1)*O / I) - 1

(with dilation a covering window may still skip i; max pooling's index test sorts that out).
No integer division here ever sees a negative operand: Triton's compiled `//` truncates
towards zero while the interpreter floors.
"""
from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl

from ..direct_launch import DirectLaunch, direct_or_none
from ..host_cache import host_cached
from ..runtime import INTERPRET, accumulator_dtype, cdiv, is_channels_last, next_power_of_2


def window_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                       ceil_mode: bool) -> int:
    """torch's pooling output size; with ceil_mode the last window must start inside the
    input or its left padding (a window starting in the right padding is dropped)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (cdiv(span, stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def adaptive_span(size: int, out: int) -> int:
    """The most taps one adaptive window (or, swapping the sizes, the most windows one input
    element) can have: exactly size/out when out divides size, else at most ceil(size/out)+1."""
    if out == 0:
        return 0
    return size // out if size % out == 0 else size // out + 2


@dataclass(frozen=True)
class Pool2dGeometry:
    """Sizes of ``y = pool(x)`` with x: (N, C, H, W) and y: (N, C, OH, OW).

    For window pooling kernel/stride/padding/dilation are torch's; for adaptive pooling
    (``adaptive=True``) kernel is the largest window and stride/padding/dilation are unused.
    """

    batch: int
    channels: int
    height: int
    width: int
    out_h: int
    out_w: int
    kernel: tuple  # (KH, KW)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    adaptive: bool = False
    # Geometries key the launch caches: hash the eleven fields once, not on every lookup (and
    # not at all for the fakes' geometries, whose sizes may be symbolic and unhashable).
    _hash: int | None = field(init=False, repr=False, compare=False, default=None)

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash((
                self.batch, self.channels, self.height, self.width, self.out_h, self.out_w,
                self.kernel, self.stride, self.padding, self.dilation, self.adaptive)))
        return self._hash

    @classmethod
    def window(cls, input_shape, kernel, stride, padding, dilation, ceil_mode):
        n, c, h, w = input_shape
        oh = window_output_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
        ow = window_output_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
        return cls(n, c, h, w, oh, ow, tuple(kernel), tuple(stride), tuple(padding),
                   tuple(dilation))

    @classmethod
    def adaptive_pool(cls, input_shape, output_size):
        n, c, h, w = input_shape
        oh, ow = output_size
        return cls(n, c, h, w, oh, ow, (adaptive_span(h, oh), adaptive_span(w, ow)),
                   adaptive=True)

    @property
    def output_shape(self) -> tuple:
        return (self.batch, self.channels, self.out_h, self.out_w)

    @property
    def input_shape(self) -> tuple:
        return (self.batch, self.channels, self.height, self.width)

    @property
    def covering(self) -> tuple:
        """(JH, JW): the most output windows that cover one input element, per axis."""
        if self.adaptive:
            return (adaptive_span(self.out_h, self.height), adaptive_span(self.out_w, self.width))
        return tuple(cdiv((k - 1) * d + 1, s)
                     for k, s, d in zip(self.kernel, self.stride, self.dilation, strict=True))

    def kernel_args(self, total: int) -> tuple:
        """Sizes in the order the max-pooling kernels take them; total is the number of
        elements the kernel writes (N*C*OH*OW forward, N*C*H*W backward)."""
        return (total, self.channels, self.height, self.width, self.out_h, self.out_w,
                *self.kernel, *self.stride, *self.padding, *self.dilation)


@host_cached()
def window_geometry(input_shape: tuple, kernel: tuple, stride: tuple, padding: tuple,
                    dilation: tuple, ceil_mode: bool) -> Pool2dGeometry:
    """``Pool2dGeometry.window`` of concrete sizes, built once per signature (all tuples)."""
    return Pool2dGeometry.window(input_shape, kernel, stride, padding, dilation, ceil_mode)


@host_cached()
def adaptive_geometry(input_shape: tuple, output_size: tuple) -> Pool2dGeometry:
    """``Pool2dGeometry.adaptive_pool`` of concrete sizes, built once per signature."""
    return Pool2dGeometry.adaptive_pool(input_shape, output_size)


# Elements per program. The interpreter pays per program instance, so it gets one big block
# (65536 runs an MNIST-sized pooling 5x faster there than 4096).
GPU_BLOCK, GPU_WARPS = 512, 4
INTERPRET_MAX_BLOCK = 65536


def launch_block(numel: int) -> int:
    if INTERPRET:
        return min(INTERPRET_MAX_BLOCK, max(16, next_power_of_2(numel)))
    return GPU_BLOCK


def needs_int64(block: int, *tensors) -> bool:
    """Flat element indices overflow int32 past 2**31 elements (the last program's lanes run
    up to a block past the end). Batch and channel offsets are always int64; offsets inside
    one sample stay int32, so one sample must hold fewer than 2**31 elements."""
    return max(t.numel() for t in tensors) + block > 2**31


def elementwise_launch(out: torch.Tensor, channels_last: bool):
    """(grid, options) of a launch with one lane per element of ``out`` (``block_offsets``):
    options are the CHANNELS_LAST, INDEX_64, ACC_DTYPE (from out's dtype), BLOCK and num_warps
    launch arguments."""
    block = launch_block(out.numel())
    return (cdiv(out.numel(), block),), dict(
        CHANNELS_LAST=channels_last, INDEX_64=needs_int64(block, out),
        ACC_DTYPE=accumulator_dtype(out.dtype), BLOCK=block, num_warps=GPU_WARPS)


@dataclass(frozen=True)
class ElementwiseLaunch:
    """A launch with one lane per element of a new output, planned once per call signature:
    the output's shape, strides and dtype (its device is the call's), the grid (None when
    the output is empty: no launch), the kernel's scalar arguments after its pointers and
    the strides of the tensors that vary per call, the keyword arguments of its ``.run``
    (grid and warmup among them, so a launch builds no dict of its own), and where kernels
    are compiled the DirectLaunch that stands for ``.run`` (cnn.kernels.direct_launch)."""

    shape: tuple
    strides: tuple
    dtype: torch.dtype
    grid: tuple | None
    args: tuple
    options: dict
    direct: DirectLaunch | None = None


def strided_is_channels_last(shape: tuple, strides: tuple) -> bool:
    """``is_channels_last`` of a tensor of this shape and these strides."""
    return is_channels_last(torch.empty_strided(shape, strides, device="meta"))


def plan_elementwise(kernel, out_shape: tuple, memory_format: torch.memory_format,
                     dtype: torch.dtype, args, options: dict) -> ElementwiseLaunch:
    """The ElementwiseLaunch of kernel writing a new (N, C, *, *) tensor of ``out_shape``
    in ``memory_format`` (``elementwise_launch``'s options, through this module's knobs);
    ``args(out_strides, numel)`` gives its scalar arguments."""
    out = torch.empty(out_shape, dtype=dtype, device="meta", memory_format=memory_format)
    grid, launch = elementwise_launch(out, memory_format == torch.channels_last)
    grid = grid if out.numel() else None
    args = tuple(args(out.stride(), out.numel()))
    options = {**options, **launch, "grid": grid, "warmup": False}
    return ElementwiseLaunch(tuple(out_shape), out.stride(), dtype, grid, args, options,
                             direct_or_none(kernel, args, options))


def knobs() -> tuple:
    """What the launch options depend on besides the call: this module's block choice and
    int64 test, read at call time so a swapped one (tests do that) keys other plans."""
    return INTERPRET, launch_block, needs_int64


def empty_grad_input(plan: ElementwiseLaunch, grad_output: torch.Tensor):
    """(dx, launch): dx (N, C, H, W) as the backward's plan lays it out, and whether a kernel
    must fill it: not when dx is empty, nor when grad_output is (dx is then zeros)."""
    dx = torch.empty_strided(plan.shape, plan.strides, dtype=plan.dtype,
                             device=grad_output.device)
    if plan.grid is None:
        return dx, False
    if grad_output.numel() == 0:
        return dx.zero_(), False
    return dx, True


@triton.jit
def block_offsets(total, INDEX_64: tl.constexpr, BLOCK: tl.constexpr):
    """This program's BLOCK flat indices (int64 with INDEX_64) and their mask (< total)."""
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < total


@triton.jit
def nchw_offsets(n, c, h, w, sn, sc, sh, sw):
    """Offsets of the elements (n, c, h, w) of a tensor of strides (sn, sc, sh, sw); the batch
    and channel terms in int64."""
    return n.to(tl.int64) * sn + c.to(tl.int64) * sc + h * sh + w * sw


@triton.jit
def flat_to_nchw(offs, C, H, W, CHANNELS_LAST: tl.constexpr):
    """Split a flat index in memory order ((n, h, w, c) for channels_last) into n, c, h, w."""
    if CHANNELS_LAST:
        c = offs % C
        w = (offs // C) % W
        h = (offs // (C * W)) % H
        n = offs // (C * W * H)
    else:
        w = offs % W
        h = (offs // W) % H
        c = (offs // (W * H)) % C
        n = offs // (W * H * C)
    return n, c, h, w


@triton.jit
def pool_window(o, size_in, size_out, stride, pad, dil, K, ADAPTIVE: tl.constexpr):
    """Output o's window along one axis: its first tap ``start`` (taps lie at start + k*dil;
    adaptive geometries carry dil = 1) and the range [k_lo, k_hi) of the k in bounds."""
    if ADAPTIVE:
        start = (o * size_in) // size_out
        k_lo = tl.zeros_like(o)
        k_hi = ((o + 1) * size_in + size_out - 1) // size_out - start
    else:
        start = o * stride - pad
        k_lo = (tl.maximum(-start, 0) + dil - 1) // dil
        k_hi = tl.minimum((tl.maximum(size_in - start, 0) + dil - 1) // dil, K)
    return start, k_lo, k_hi


@triton.jit
def covering_windows(i, size_in, size_out, stride, pad, dil, K, ADAPTIVE: tl.constexpr):
    """The outputs lo, lo+1, ..., lo+count-1 whose windows (first to last tap) contain input i;
    count may be 0 or less."""
    if ADAPTIVE:
        lo = (i * size_out) // size_in
        hi = ((i + 1) * size_out + size_in - 1) // size_in - 1
    else:
        first = tl.maximum(i + pad - (K - 1) * dil, 0)
        lo = (first + stride - 1) // stride
        hi = tl.minimum((i + pad) // stride, size_out - 1)
    return lo, hi - lo + 1
