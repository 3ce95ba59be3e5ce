"""max/avg pooling, window and adaptive, with torch.nn.functional's signatures, semantics and
errors (all checked here, before any launch); the ops are ``torch.ops.cnn.*``
(cnn/ops/pooling.py)."""
import operator

import torch

from kernels.pool_geometry import Pool2dGeometry
from kernels.runtime import FLOAT_DTYPES, check_device

from ..ops import pooling as ops

# ---------------------------------------------------------------------------------------------
# Argument parsing and validation, with torch's exception types.


def _int(value, op: str, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{op}(): argument '{name}' must be an int or a tuple of ints, not bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{op}(): argument '{name}' must be an int or a tuple of ints, not "
                        f"{type(value).__name__}") from None


def _pair(value, op: str, name: str, what: str, default=None) -> tuple:
    """An int or a 1- or 2-sequence of ints -> (a, b); None or () -> default (stride)."""
    if default is not None and (value is None or (isinstance(value, (list, tuple))
                                                  and len(value) == 0)):
        return default
    if not isinstance(value, (list, tuple)):
        v = _int(value, op, name)
        return (v, v)
    if len(value) not in (1, 2):
        raise RuntimeError(f"{op}: {name} must {what}, but got {name}={list(value)}")
    a, b = (value[0], value[0]) if len(value) == 1 else value
    return (_int(a, op, name), _int(b, op, name))


def _check_dtype(input: torch.Tensor, op: str) -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}(): argument 'input' must be Tensor, not {type(input).__name__}")
    if input.dtype not in FLOAT_DTYPES:
        raise NotImplementedError(
            f"cnn {op} supports float16, bfloat16, float32 and float64 input, got {input.dtype}")


def _check_window_input(input: torch.Tensor, op: str) -> None:
    """3D (C, H, W) or 4D (N, C, H, W) with only the batch allowed to be empty."""
    if input.dim() < 3 and op == "avg_pool2d":
        # torch's avg_pool2d indexes size(-3) before it checks the rank: an IndexError.
        raise IndexError(f"{op}: expected 3D (unbatched) or 4D (batched) input, but got input "
                         f"of size {list(input.shape)} (Dimension out of range)")
    if input.dim() not in (3, 4):
        raise RuntimeError(f"{op}: expected 3D (unbatched) or 4D (batched) input, but got "
                           f"input of size {list(input.shape)}")
    if any(s == 0 for s in input.shape[-3:]):
        raise RuntimeError(
            f"{op}: expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for "
            f"input, but got input of size {list(input.shape)}")


def _window_geometry(input: torch.Tensor, op: str, kernel_size, stride, padding, dilation,
                     ceil_mode: bool) -> Pool2dGeometry:
    """Validate window pooling's arguments as torch does; input is (N, C, H, W) already."""
    kernel = _pair(kernel_size, op, "kernel_size", "either be a single int, or a tuple of two "
                   "ints")
    stride = _pair(stride, op, "stride", "either be omitted, a single int, or a tuple of two "
                   "ints", default=kernel)
    padding = _pair(padding, op, "padding", "either be a single int, or a tuple of two ints")
    dilation = _pair(dilation, op, "dilation", "be either a single int, or a tuple of two ints")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    if kh <= 0 or kw <= 0:
        raise RuntimeError(f"{op}: kernel size should be greater than zero, but got kH: {kh} "
                           f"kW: {kw}")
    if sh <= 0 or sw <= 0:
        raise RuntimeError(f"{op}: stride should be greater than zero, but got dH: {sh} "
                           f"dW: {sw}")
    if dh <= 0 or dw <= 0:
        raise RuntimeError(f"{op}: dilation should be greater than zero, but got dilationH: "
                           f"{dh} dilationW: {dw}")
    if ph < 0 or pw < 0:
        raise RuntimeError(f"{op}: pad must be non-negative, but got pad: ({ph}, {pw})")
    # torch bounds padding by half the kernel size itself, dilation or not.
    if ph > kh // 2 or pw > kw // 2:
        raise RuntimeError(
            f"{op}: pad should be smaller than or equal to half of kernel size, but got "
            f"padH = {ph}, padW = {pw}, kH = {kh}, kW = {kw}")
    g = Pool2dGeometry.window(input.shape, kernel, stride, padding, dilation, ceil_mode)
    if g.out_h < 1 or g.out_w < 1:
        raise RuntimeError(
            f"{op}: Given input size: ({g.channels}x{g.height}x{g.width}). Calculated output "
            f"size: ({g.channels}x{g.out_h}x{g.out_w}). Output size is too small")
    return g


def _check_adaptive_output_size(input, output_size) -> None:
    """torch.nn.functional's ``_list_with_default``, which runs first: a sequence output_size
    needs an input of more dims than its length, and reads input.size() for None entries."""
    if not isinstance(output_size, (list, tuple)):
        return
    if None in output_size and not isinstance(input, torch.Tensor):
        raise AttributeError(f"'{type(input).__name__}' object has no attribute 'size'")
    if isinstance(input, torch.Tensor) and input.dim() <= len(output_size):
        raise ValueError(f"Input dimension should be at least {len(output_size) + 1}")


def _adaptive_geometry(input: torch.Tensor, op: str, output_size) -> Pool2dGeometry:
    """Validate adaptive pooling's arguments as torch does; input is 3D or 4D."""
    if input.dim() not in (3, 4):
        raise RuntimeError(f"{op}(): Expected 3D or 4D tensor, but got {list(input.shape)}")
    # torch lets adaptive_avg_pool2d's channels be empty, but not adaptive_max_pool2d's.
    first = input.dim() - 2 if op == "adaptive_avg_pool2d" else 1
    for d in range(first, input.dim()):
        if input.shape[d] == 0:
            raise RuntimeError(
                f"{op}(): Expected input to have non-zero size for non-batch dimensions, but "
                f"input has sizes {list(input.shape)} with dimension {d} being empty")
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != 2:
            raise RuntimeError(f"{op}: output_size must be 2, but got output_size="
                               f"{list(output_size)}")
        size = tuple(input.shape[-2 + i] if s is None else _int(s, op, "output_size")
                     for i, s in enumerate(output_size))
    else:
        size = (_int(output_size, op, "output_size"),) * 2
    if size[0] < 0 or size[1] < 0:
        raise RuntimeError(f"{op}: elements of output_size must be greater than or equal to 0 "
                           f"but received {{{size[0]}, {size[1]}}}")
    batched = input if input.dim() == 4 else input.unsqueeze(0)
    return Pool2dGeometry.adaptive_pool(batched.shape, size)


def _store_indices(input: torch.Tensor, return_indices) -> bool:
    """Max pooling keeps its argmax when asked to, or when the backward will need it."""
    return bool(return_indices) or (torch.is_grad_enabled() and input.requires_grad)


def _batched(input: torch.Tensor):
    return (input.unsqueeze(0), True) if input.dim() == 3 else (input, False)


def _unbatch(out, unbatched: bool):
    """Drops the batch dim added for a (C, H, W) input; torch returns such results contiguous
    (3D tensors have no channels_last), even when the batched view looked channels_last."""
    if not unbatched:
        return out
    if isinstance(out, tuple):
        return tuple(t.squeeze(0).contiguous() for t in out)
    return out.squeeze(0).contiguous()


# ---------------------------------------------------------------------------------------------
# torch.nn.functional-shaped API


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Drop-in for ``torch.nn.functional.max_pool2d``, running the Triton kernels.

    input: (N, C, H, W) or unbatched (C, H, W). Returns y: (N, C, OH, OW) (or (C, OH, OW)) in
    the input's memory format, and with return_indices also int64 indices of y's shape, each
    a flat index h*W + w into its input plane.
    """
    op = "max_pool2d"
    _check_dtype(input, op)
    _check_window_input(input, op)
    batched, unbatched = _batched(input)
    geometry = _window_geometry(batched, op, kernel_size, stride, padding, dilation,
                                bool(ceil_mode))
    check_device(batched)
    y, indices = ops.max_pool2d(batched, list(geometry.kernel), list(geometry.stride),
                                list(geometry.padding), list(geometry.dilation),
                                bool(ceil_mode), _store_indices(batched, return_indices))
    return _unbatch((y, indices) if return_indices else y, unbatched)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Drop-in for ``torch.nn.functional.avg_pool2d``, running the Triton kernels.

    input: (N, C, H, W) or unbatched (C, H, W). Returns (N, C, OH, OW) (or (C, OH, OW)) in the
    input's memory format; sums accumulate in fp32 (fp64 for fp64 input).
    """
    op = "avg_pool2d"
    _check_dtype(input, op)
    _check_window_input(input, op)
    batched, unbatched = _batched(input)
    geometry = _window_geometry(batched, op, kernel_size, stride, padding, 1, bool(ceil_mode))
    if divisor_override is not None:
        divisor_override = _int(divisor_override, op, "divisor_override")
        if divisor_override == 0:
            raise RuntimeError(f"{op}: divisor must be not zero")
    check_device(batched)
    out = ops.avg_pool2d(batched, list(geometry.kernel), list(geometry.stride),
                         list(geometry.padding), bool(ceil_mode), bool(count_include_pad),
                         divisor_override)
    return _unbatch(out, unbatched)


def adaptive_avg_pool2d(input, output_size):
    """Drop-in for ``torch.nn.functional.adaptive_avg_pool2d``, running the Triton kernels.

    input: (N, C, H, W) or (C, H, W); output_size: int or (OH, OW), None entries meaning the
    input's size. Output o along an axis of size I averages [floor(o*I/O), ceil((o+1)*I/O)).
    """
    op = "adaptive_avg_pool2d"
    _check_adaptive_output_size(input, output_size)
    _check_dtype(input, op)
    geometry = _adaptive_geometry(input, op, output_size)
    batched, unbatched = _batched(input)
    check_device(batched)
    out = ops.adaptive_avg_pool2d(batched, [geometry.out_h, geometry.out_w])
    return _unbatch(out, unbatched)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Drop-in for ``torch.nn.functional.adaptive_max_pool2d``, running the Triton kernels.

    input: (N, C, H, W) or (C, H, W); output_size: int or (OH, OW), None entries meaning the
    input's size. With return_indices also returns int64 flat indices into each H*W plane.
    """
    op = "adaptive_max_pool2d"
    _check_adaptive_output_size(input, output_size)
    _check_dtype(input, op)
    geometry = _adaptive_geometry(input, op, output_size)
    batched, unbatched = _batched(input)
    check_device(batched)
    y, indices = ops.adaptive_max_pool2d(batched, [geometry.out_h, geometry.out_w],
                                         _store_indices(batched, return_indices))
    return _unbatch((y, indices) if return_indices else y, unbatched)


__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"]
