"""max/avg pooling, window and adaptive, with torch.nn.functional's signatures, semantics and
errors (all checked here, before any launch); the ops are ``torch.ops.cnn.*``
(cnn/ops/pool2d.py)."""
import torch

from ..kernels.pool2d.geometry import Pool2dGeometry, adaptive_geometry, knobs
from ..kernels.runtime import FLOAT_DTYPES, check_device
from ..ops import pool2d as ops
from ..ops.registry import tracing
from .conv2d_args import parse_int

# Plain eager calls whose arguments were checked before, by signature (``_eager_key``) ->
# (whether the input is unbatched, the ops' PoolPlan of the batched input).
EAGER_CALLS = ops.EAGER_CALLS

# ---------------------------------------------------------------------------------------------
# Argument parsing and validation, with torch's exception types.


def _int(value, op: str, name: str) -> int:
    error = f"{op}(): argument '{name}' must be an int or a tuple of ints, not {{type}}"
    return parse_int(value, error.format(type="bool"), error)


def _ints(value, op: str, name: str) -> tuple:
    """The argument parser's reading of an ``int[2]``: an int, or a sequence of ints of any
    length (the length is the op's own check, after every argument parsed); TypeError
    otherwise."""
    if isinstance(value, (list, tuple)):
        return tuple(_int(v, op, name) for v in value)
    return (_int(value, op, name),)


def _bool(value, op: str, name: str) -> bool:
    """The argument parser's bool: a Python (or numpy) bool, nothing else (not 0 or 1)."""
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if not (isinstance(value, bool) or numpy_bool):
        raise TypeError(f"{op}(): argument '{name}' must be bool, not {type(value).__name__}")
    return bool(value)


def _pair(values: tuple, op: str, name: str, what: str, default=None) -> tuple:
    """A parsed int[2] of length 1 or 2 -> (a, b); () -> default (stride); else torch's
    RuntimeError."""
    if default is not None and len(values) == 0:
        return default
    if len(values) not in (1, 2):
        raise RuntimeError(f"{op}: {name} must {what}, but got {name}={list(values)}")
    return (values[0], values[0]) if len(values) == 1 else values


def _check_tensor(input, op: str) -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}(): argument 'input' must be Tensor, not {type(input).__name__}")


def _check_dtype(input: torch.Tensor, op: str) -> None:
    """Last of the checks: torch raises its argument errors for any dtype."""
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


def _window_options(op: str, kernel_size, stride, padding, dilation=1) -> tuple:
    """(kernel, stride, padding, dilation) as pairs, in torch's order: every argument's type
    first (the argument parser: TypeError), then each one's length (RuntimeError)."""
    kernel = _ints(kernel_size, op, "kernel_size")
    stride = () if stride is None else _ints(stride, op, "stride")
    padding = _ints(padding, op, "padding")
    dilation = _ints(dilation, op, "dilation")
    kernel = _pair(kernel, op, "kernel_size", "either be a single int, or a tuple of two ints")
    stride = _pair(stride, op, "stride", "either be omitted, a single int, or a tuple of two "
                   "ints", default=kernel)
    padding = _pair(padding, op, "padding", "either be a single int, or a tuple of two ints")
    dilation = _pair(dilation, op, "dilation", "be either a single int, or a tuple of two ints")
    return kernel, stride, padding, dilation


def _window_geometry(input: torch.Tensor, op: str, kernel, stride, padding, dilation,
                     ceil_mode: bool) -> Pool2dGeometry:
    """Validate window pooling's sizes as torch does; input is (N, C, H, W) already."""
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


def _list_with_default(output_size, input):
    """torch.nn.functional's ``_list_with_default(output_size, input.size())``, which runs
    before anything else: input.size() first (AttributeError for a list), an int as it is,
    else a sequence whose None entries take input's trailing sizes, and which needs an input
    of more dims than its length (len() of anything else: TypeError)."""
    defaults = input.size()
    if isinstance(output_size, (int, torch.SymInt)):
        return output_size
    try:
        length = len(output_size)
    except TypeError as error:
        raise TypeError(f"argument 'output_size' must be an int or a tuple of ints, not "
                        f"{type(output_size).__name__} ({error})") from None
    if len(defaults) <= length:
        raise ValueError(f"Input dimension should be at least {length + 1}")
    return [v if v is not None else d
            for v, d in zip(output_size, defaults[-length:], strict=False)]


def _adaptive_output_size(output_size, op: str) -> tuple:
    """The argument parser's reading of output_size (an int or a sequence of ints; TypeError
    otherwise): a tuple, of any length (the length is checked later, with the input)."""
    if not isinstance(output_size, (list, tuple)) and not (
            isinstance(output_size, torch.Tensor) and output_size.dim() == 1):
        return (_int(output_size, op, "output_size"),) * 2
    return tuple(_int(s, op, "output_size") for s in output_size)


def _adaptive_geometry(input: torch.Tensor, op: str, size: tuple) -> Pool2dGeometry:
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
    if len(size) != 2:
        raise RuntimeError(f"{op}: output_size must be 2, but got output_size={list(size)}")
    if size[0] < 0 or size[1] < 0:
        raise RuntimeError(f"{op}: elements of output_size must be greater than or equal to 0 "
                           f"but received {{{size[0]}, {size[1]}}}")
    batched = input if input.dim() == 4 else input.unsqueeze(0)
    return Pool2dGeometry.adaptive_pool(batched.shape, size)


def _checked_window(input, op: str, kernel, stride, padding, dilation, ceil_mode: bool):
    """(batched input, whether a batch dim was added, geometry) of window pooling, once its
    arguments are parsed: the input's rank and sizes, the window, dtype and device checked."""
    _check_window_input(input, op)
    batched, unbatched = _batched(input)
    geometry = _window_geometry(batched, op, kernel, stride, padding, dilation, ceil_mode)
    _check_dtype(input, op)
    check_device(batched)
    return batched, unbatched, geometry


def _checked_adaptive(input, op: str, output_size):
    """(batched input, whether a batch dim was added, (OH, OW), the output size asked for)
    of adaptive pooling, every argument checked."""
    size = _adaptive_output_size(_list_with_default(output_size, input), op)
    geometry = _adaptive_geometry(input, op, size)
    _check_dtype(input, op)
    batched, unbatched = _batched(input)
    check_device(batched)
    return batched, unbatched, [geometry.out_h, geometry.out_w], size


def _exact_ints(ints: tuple):
    """ints (each an int, a sequence of ints, or None) with lists made tuples, or None when
    one is something else (a bool, a numpy int, a tensor: the checking path reads those)."""
    exact = []
    for value in ints:
        kind = type(value)
        if kind is int or value is None:
            exact.append(value)
        elif (kind is tuple or kind is list) and all(type(v) is int for v in value):
            exact.append(tuple(value))
        else:
            return None
    return tuple(exact)


def _eager_key(op: str, input, ints: tuple, bools: tuple) -> tuple | None:
    """The EAGER_CALLS key of a plain eager call: everything its checks and launches depend
    on (the input's shape, strides, dtype and device, the options, whether the input requires
    grad now, the launchers' knobs). None for a tensor subclass, under tracing (sizes may be
    symbolic, and the library op must see the call), or for options not of the exact types
    the checks accept (ints, sequences of ints, None; bools): as a key True == 1, so only
    exact types may hit an entry."""
    if type(input) is not torch.Tensor or tracing():
        return None
    for value in bools:
        if type(value) is not bool:
            return None
    for value in ints:
        if type(value) is not int and value is not None:
            ints = _exact_ints(ints)
            if ints is None:
                return None
            break
    return (op, input.shape, input.stride(), input.dtype, input.device, ints, bools,
            input.requires_grad and torch.is_grad_enabled(), knobs())


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


def _planned_call(eager, input, unbatched: bool, plan):
    """A cached signature's call of its eager Function: y (or (y, indices)), unbatched again
    for a (C, H, W) input."""
    if unbatched:
        return _unbatch(eager(input.unsqueeze(0), plan), True)
    return eager(input, plan)


def _plannable(geometry: Pool2dGeometry) -> bool:
    """Whether an adaptive pooling may take the eager path: not when its output has an empty
    channel or spatial dim, whose backward must refuse (``_refuse_empty_backward``)."""
    return min(geometry.channels, geometry.out_h, geometry.out_w) > 0


def _refuse_empty_backward(out, op: str):
    """torch's adaptive pooling backward refuses a grad_output with an empty non-batch dim,
    which its forward returns (output_size 0; avg pooling's empty channels when batched):
    the same RuntimeError from a gradient hook, before our backward runs."""
    y = out[0] if isinstance(out, tuple) else out
    empty = [d for d in range(1, y.dim()) if y.shape[d] == 0]
    if y.requires_grad and empty:
        def refuse(grad):
            raise RuntimeError(
                f"{op}_backward(): Expected grad_output to have non-zero size for non-batch "
                f"dimensions, but grad_output has sizes {list(grad.shape)} with dimension "
                f"{empty[0]} being empty")
        y.register_hook(refuse)
    return out


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
    key = _eager_key(op, input, (kernel_size, stride, padding, dilation),
                     (ceil_mode, bool(return_indices)))
    planned = None if key is None else EAGER_CALLS.get(key)
    if planned is None:
        _check_tensor(input, op)
        ceil_mode = _bool(ceil_mode, op, "ceil_mode")
        options = _window_options(op, kernel_size, stride, padding, dilation)
        batched, unbatched, g = _checked_window(input, op, *options, ceil_mode)
        store = _store_indices(batched, return_indices)
        if key is None:
            y, indices = ops.max_pool2d(batched, list(g.kernel), list(g.stride),
                                        list(g.padding), list(g.dilation), ceil_mode, store)
            return _unbatch((y, indices) if return_indices else y, unbatched)
        planned = EAGER_CALLS.put(key, (unbatched, ops.plan_max_pool2d(
            batched, g, ceil_mode, store, bool(return_indices))))
    return _planned_call(ops.max_pool2d_eager, input, *planned)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Drop-in for ``torch.nn.functional.avg_pool2d``, running the Triton kernels.

    input: (N, C, H, W) or unbatched (C, H, W). Returns (N, C, OH, OW) (or (C, OH, OW)) in the
    input's memory format; sums accumulate in fp32 (fp64 for fp64 input).
    """
    op = "avg_pool2d"
    key = _eager_key(op, input, (kernel_size, stride, padding, divisor_override),
                     (ceil_mode, count_include_pad))
    planned = None if key is None else EAGER_CALLS.get(key)
    if planned is None:
        _check_tensor(input, op)
        ceil_mode = _bool(ceil_mode, op, "ceil_mode")
        count_include_pad = _bool(count_include_pad, op, "count_include_pad")
        if divisor_override is not None:
            divisor_override = _int(divisor_override, op, "divisor_override")
        kernel, stride, padding, _ = _window_options(op, kernel_size, stride, padding)
        if divisor_override == 0:
            raise RuntimeError(f"{op}: divisor must be not zero")
        batched, unbatched, g = _checked_window(input, op, kernel, stride, padding, (1, 1),
                                                ceil_mode)
        if key is None:
            out = ops.avg_pool2d(batched, list(g.kernel), list(g.stride), list(g.padding),
                                 ceil_mode, count_include_pad, divisor_override)
            return _unbatch(out, unbatched)
        planned = EAGER_CALLS.put(key, (unbatched, ops.plan_avg_pool2d(
            batched, g, ceil_mode, count_include_pad, divisor_override)))
    return _planned_call(ops.avg_pool2d_eager, input, *planned)


def adaptive_avg_pool2d(input, output_size):
    """Drop-in for ``torch.nn.functional.adaptive_avg_pool2d``, running the Triton kernels.

    input: (N, C, H, W) or (C, H, W); output_size: int or (OH, OW), None entries meaning the
    input's size. Output o along an axis of size I averages [floor(o*I/O), ceil((o+1)*I/O)).
    """
    op = "adaptive_avg_pool2d"
    key = _eager_key(op, input, (output_size,), ())
    planned = None if key is None else EAGER_CALLS.get(key)
    if planned is None:
        batched, unbatched, out_size, size = _checked_adaptive(input, op, output_size)
        g = None if key is None else adaptive_geometry(tuple(batched.shape), tuple(out_size))
        if g is None or not _plannable(g):
            out = _unbatch(ops.adaptive_avg_pool2d(batched, out_size), unbatched)
            # torch computes output_size (1, 1) as a mean, whose backward takes empty channels.
            return out if size == (1, 1) else _refuse_empty_backward(out, op)
        planned = EAGER_CALLS.put(key, (unbatched, ops.plan_avg_pool2d(batched, g, False, True,
                                                                       None)))
    return _planned_call(ops.avg_pool2d_eager, input, *planned)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Drop-in for ``torch.nn.functional.adaptive_max_pool2d``, running the Triton kernels.

    input: (N, C, H, W) or (C, H, W); output_size: int or (OH, OW), None entries meaning the
    input's size. With return_indices also returns int64 flat indices into each H*W plane.
    """
    op = "adaptive_max_pool2d"
    key = _eager_key(op, input, (output_size,), (bool(return_indices),))
    planned = None if key is None else EAGER_CALLS.get(key)
    if planned is None:
        batched, unbatched, out_size, _ = _checked_adaptive(input, op, output_size)
        store = _store_indices(batched, return_indices)
        g = None if key is None else adaptive_geometry(tuple(batched.shape), tuple(out_size))
        if g is None or not _plannable(g):
            y, indices = ops.adaptive_max_pool2d(batched, out_size, store)
            return _refuse_empty_backward(
                _unbatch((y, indices) if return_indices else y, unbatched), op)
        planned = EAGER_CALLS.put(key, (unbatched, ops.plan_max_pool2d(
            batched, g, False, store, bool(return_indices))))
    return _planned_call(ops.max_pool2d_eager, input, *planned)


__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"]
