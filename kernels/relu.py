"""ReLU and its backward, elementwise over tensors of any shape and strides.

    forward:   y  = x if not (x < 0) else 0     (torch's relu: NaN and -0.0 pass through)
    backward:  dx = dy if y > 0 else 0          (torch's threshold_backward on the output)

Dense tensors that share strides (contiguous, channels_last, any permutation of either) are
walked as flat storage; otherwise each element's offsets come from up to four sizes and
strides (higher-rank non-dense tensors are made contiguous first by the caller).
"""
import math

import torch
import triton
import triton.language as tl

from .direct_launch import plan_launch
from .elementwise import MAX_DIMS, dims4, is_dense, strided_offsets
from .host_cache import host_cached
from .runtime import INTERPRET, cdiv, dot_upcast

GPU_BLOCK = 1024
BLOCK = 65536 if INTERPRET else GPU_BLOCK
GPU_WARPS = 4


@triton.jit
def relu_kernel(
    # pointers
    x_ptr, grad_ptr, out_ptr,
    # strides
    sx0, sx1, sx2, sx3,
    sg0, sg1, sg2, sg3,
    so0, so1, so2, so3,
    # sizes
    S1, S2, S3, numel,
    # meta-parameters
    BACKWARD: tl.constexpr, DENSE: tl.constexpr, UPCAST: tl.constexpr,
    # tiles
    BLOCK: tl.constexpr,
):
    """out = relu(x), or (BACKWARD) out = where(x > 0, grad, 0) with x the forward's output."""
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
    if UPCAST:
        x = x.to(tl.float32)  # the interpreter compares bfloat16 bit patterns otherwise
    if BACKWARD:
        g = tl.load(grad_ptr + g_offs, mask=mask, other=0)
        out = tl.where(x > 0, g, 0)
    else:
        out = tl.where(x < 0, 0, x)
    tl.store(out_ptr + o_offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@host_cached()
def launch_plan(shape: tuple, x_strides: tuple, grad_strides: tuple | None, out_strides: tuple,
                dtype: torch.dtype, backward: bool, block: int):
    """The Launch (cnn.kernels.direct_launch) of relu_kernel over tensors of this shape and
    these strides (grad_strides None in the forward), called with (x, grad or x, out); or
    None when there is nothing to do."""
    numel = math.prod(shape)
    if numel == 0:
        return None
    same = all(s == out_strides for s in (x_strides, grad_strides) if s is not None)
    dense = same and is_dense(torch.empty_strided(shape, out_strides, device="meta"))
    if not dense and len(shape) > MAX_DIMS:
        raise ValueError("non-dense tensors of more than 4 dimensions must be made contiguous")
    if dense:  # flat storage: strides and sizes unused
        sx = sg = so = (0,) * MAX_DIMS
        sizes = (1,) * MAX_DIMS
    else:
        sx, sizes = dims4(torch.empty_strided(shape, x_strides, device="meta"))
        sg, _ = dims4(torch.empty_strided(
            shape, grad_strides if grad_strides is not None else x_strides, device="meta"))
        so, _ = dims4(torch.empty_strided(shape, out_strides, device="meta"))
    return plan_launch(relu_kernel, (*sx, *sg, *so, *sizes[1:], numel), dict(
        BACKWARD=backward, DENSE=dense, UPCAST=dot_upcast(dtype), BLOCK=block,
        num_warps=GPU_WARPS, grid=(cdiv(numel, block),), warmup=False))


def _launch(x, grad, out, backward: bool):
    if out.is_contiguous() and x.is_contiguous() and (grad is None or grad.is_contiguous()):
        # The common case, planned as the flat walk it is: by element count alone.
        flat = (out.numel(),)
        plan = launch_plan(flat, (1,), None if grad is None else (1,), (1,), out.dtype,
                           backward, BLOCK)
    else:
        plan = launch_plan(tuple(out.shape), x.stride(),
                           None if grad is None else grad.stride(), out.stride(), out.dtype,
                           backward, BLOCK)
    if plan is None:
        return out
    if plan.direct is not None:
        plan.direct(x, grad if grad is not None else x, out)
    else:  # .run: relu_kernel[grid](...) without the closure it builds on every call
        relu_kernel.run(x, grad if grad is not None else x, out, *plan.args, **plan.options)
    return out


def relu_forward(x: torch.Tensor, out: torch.Tensor = None) -> torch.Tensor:
    """y = relu(x), any shape; out defaults to a new tensor laid out like x (out=x: in place).
    Tensors of more than 4 dimensions that are not dense go through a contiguous copy."""
    if x.dim() > MAX_DIMS and not is_dense(x):
        y = _launch(x.contiguous(), None, torch.empty(x.shape, device=x.device, dtype=x.dtype),
                    backward=False)
        return out.copy_(y) if out is not None else y
    if out is None:
        out = torch.empty_like(x)
    return _launch(x, None, out, backward=False)


def relu_backward(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """dx = grad_output where output > 0, else 0; laid out like output."""
    grad_input = torch.empty_like(output)
    if output.dim() > MAX_DIMS and grad_output.stride() != output.stride():
        grad_output = grad_output.contiguous()
        output = output.contiguous()
        grad_input = torch.empty_like(output)
    return _launch(output, grad_output, grad_input, backward=True)


__all__ = ["relu_forward", "relu_backward", "relu_kernel", "is_dense", "launch_plan"]
