"""Standalone activations (ReLU6, LeakyReLU, SiLU, Hardswish, GELU) and their derivatives,
elementwise over tensors of any shape and strides (walked as in ``elementwise.py``).

    forward:          y  = a(x)                        a, a': activation_math.py
    backward:         dx = dy * a'(x)                  from the saved input x
    double backward:  dx is linear in dy, so  d(dx)/d(dy) . ggx = ggx * a'(x)   (backward again)
                                              d(dx)/dx    . ggx = ggx * dy * a''(x)

    ACT          a''(x)
    RELU6        0                 (piecewise linear: torch's double backward is zeros too)
    LEAKY_RELU   0
    SILU         s (1 - s) (2 + x (1 - 2 s)),  s = sigmoid(x)
    HARDSWISH    1/3 if -3 < x < 3 else 0
    GELU         phi(x) (2 - x^2),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    GELU_TANH    s (1 - s) (4 u' + 4 x (1 - 2 s) u'^2 + 2 x u''),  s = sigmoid(2u),
                 u = sqrt(2/pi) (x + 0.044715 x^3), u'' = sqrt(2/pi) 6 * 0.044715 x

Half-precision inputs are computed in fp32, fp64 in fp64; integer inputs (ReLU6 only, as torch
allows) in fp32, exact since the results are 0..6 or x itself.
"""
import math

import torch
import triton
import triton.language as tl

from .activation_math import activate, activation_grad
from .elementwise import GPU_WARPS, MAX_DIMS, block_for, dims4, is_dense, strided_offsets
from .host_cache import host_cached
from .runtime import cdiv

VALUE, FIRST, SECOND = 0, 1, 2  # DERIVATIVE: a(x), grad * a'(x), grad * a''(x)


@triton.jit
def second_derivative_grad(x, grad, ACT: tl.constexpr):
    """grad * a''(x) (the table above), in x's dtype."""
    if ACT == 4:  # SILU
        s = 1.0 / (1.0 + tl.exp(-x))
        grad = grad * s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))
    elif ACT == 5:  # HARDSWISH
        grad = tl.where((x > -3.0) & (x < 3.0), grad / 3.0, 0.0)
    elif ACT == 6:  # GELU
        grad = grad * tl.exp(-0.5 * x * x) * 0.3989422804014327 * (2.0 - x * x)
    elif ACT == 7:  # GELU_TANH
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        du = 0.7978845608028654 * (1.0 + 0.134145 * x * x)
        ddu = 0.7978845608028654 * 0.26829 * x
        s = 1.0 / (1.0 + tl.exp(-2.0 * u))
        grad = grad * s * (1.0 - s) * (4.0 * du + 4.0 * x * (1.0 - 2.0 * s) * du * du
                                       + 2.0 * x * ddu)
    else:  # piecewise linear
        grad = tl.zeros_like(grad)
    return grad


@triton.jit
def activation_kernel(
    # pointers
    x_ptr, grad_ptr, out_ptr,
    # strides
    sx0, sx1, sx2, sx3,
    sg0, sg1, sg2, sg3,
    so0, so1, so2, so3,
    # sizes
    S1, S2, S3, numel,
    # LEAKY_RELU's negative slope, fp64 so that fp64 tensors get torch's exact product
    slope: tl.float64,
    # meta-parameters
    ACT: tl.constexpr, DERIVATIVE: tl.constexpr, DENSE: tl.constexpr, FP64: tl.constexpr,
    # tiles
    BLOCK: tl.constexpr,
):
    """out = a(x), grad * a'(x) or grad * a''(x) (DERIVATIVE 0, 1, 2) for activation ACT."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < numel
    if DENSE:
        x_offs = idx
        g_offs = idx
        o_offs = idx
    else:
        x_offs = strided_offsets(idx, sx0, sx1, sx2, sx3, S1, S2, S3)
        g_offs = strided_offsets(idx, sg0, sg1, sg2, sg3, S1, S2, S3)
        o_offs = strided_offsets(idx, so0, so1, so2, so3, S1, S2, S3)
    x = tl.load(x_ptr + x_offs, mask=mask, other=0)
    if FP64:
        x = x.to(tl.float64)
    else:
        x = x.to(tl.float32)
    # The slope in x's dtype, as torch rounds it (zeros + slope: the interpreter passes a
    # Python float, which a cast would round to fp32 first).
    slope_x = (tl.zeros([1], x.dtype) + slope).to(x.dtype)
    if DERIVATIVE == 0:
        out = activate(x, slope_x, ACT)
    else:
        g = tl.load(grad_ptr + g_offs, mask=mask, other=0).to(x.dtype)
        if DERIVATIVE == 1:
            out = activation_grad(x, g, slope_x, ACT)
        else:
            out = second_derivative_grad(x, g, ACT)
    tl.store(out_ptr + o_offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@host_cached()
def launch_plan(shape: tuple, x_strides: tuple, grad_strides: tuple | None, out_strides: tuple,
                fp64: bool, tile_for):
    """(grid, size and stride arguments, options) of one launch over tensors of this shape
    and these strides (grad_strides None in the forward), tiles of ``tile_for(numel)``
    elements (``block_for``, or what a test swaps in: part of the key), or None when there
    is nothing to do."""
    numel = math.prod(shape)
    if numel == 0:
        return None
    out = torch.empty_strided(shape, out_strides, device="meta")
    dense = all(s == out_strides for s in (x_strides, grad_strides) if s is not None) \
        and is_dense(out)
    if dense:  # flat storage: strides and sizes unused
        sx = sg = so = (0,) * MAX_DIMS
        sizes = (1,) * MAX_DIMS
    else:
        sx, sizes = dims4(torch.empty_strided(shape, x_strides, device="meta"))
        sg, _ = dims4(torch.empty_strided(
            shape, grad_strides if grad_strides is not None else x_strides, device="meta"))
        so, _ = dims4(out)
    block = tile_for(numel)
    return (cdiv(numel, block),), (*sx, *sg, *so, *sizes[1:], numel), dict(
        DENSE=dense, FP64=fp64, BLOCK=block, num_warps=GPU_WARPS)


def _launch(x, grad, out, act: int, slope: float, derivative: int):
    fp64 = x.dtype == torch.float64
    if out.is_contiguous() and x.is_contiguous() and (grad is None or grad.is_contiguous()):
        # The common case, planned as the flat walk it is: by element count alone.
        plan = launch_plan((out.numel(),), (1,), None if grad is None else (1,), (1,), fp64,
                           block_for)
    else:
        plan = launch_plan(tuple(out.shape), x.stride(),
                           None if grad is None else grad.stride(), out.stride(), fp64,
                           block_for)
    if plan is not None:
        grid, args, options = plan
        # .run: activation_kernel[grid](...) without the closure it builds on every call
        activation_kernel.run(x, grad if grad is not None else x, out, *args, float(slope),
                              ACT=act, DERIVATIVE=derivative, grid=grid, warmup=False,
                              **options)
    return out


def activation_forward(x: torch.Tensor, act: int, slope: float = 0.0,
                       out: torch.Tensor = None) -> torch.Tensor:
    """y = a(x) for the activation_math code ``act``, any shape; out defaults to a new tensor
    laid out like x (out=x: in place). Non-dense tensors of more than 4 dimensions go through
    a contiguous copy."""
    if x.dim() > MAX_DIMS and not is_dense(x):
        y = _launch(x.contiguous(), None, x.new_empty(x.shape), act, slope, VALUE)
        return out.copy_(y) if out is not None else y
    if out is None:
        out = torch.empty_like(x)
    return _launch(x, None, out, act, slope, VALUE)


def _gradient(grad: torch.Tensor, x: torch.Tensor, act: int, slope: float, derivative: int):
    if x.dim() > MAX_DIMS and (grad.stride() != x.stride() or not is_dense(x)):
        grad, x = grad.contiguous(), x.contiguous()
    return _launch(x, grad, torch.empty_like(x), act, slope, derivative)


def activation_backward(grad: torch.Tensor, x: torch.Tensor, act: int,
                        slope: float = 0.0) -> torch.Tensor:
    """dx = grad * a'(x), x the forward's input (same shape as grad); laid out like x."""
    return _gradient(grad, x, act, slope, FIRST)


def activation_second_grad(grad: torch.Tensor, x: torch.Tensor, act: int,
                           slope: float = 0.0) -> torch.Tensor:
    """grad * a''(x) (the x-part of the double backward, grad = dy * ggx); laid out like x."""
    return _gradient(grad, x, act, slope, SECOND)


__all__ = ["activation_forward", "activation_backward", "activation_second_grad",
           "activation_kernel", "launch_plan"]
