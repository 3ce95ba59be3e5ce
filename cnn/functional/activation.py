"""relu6, leaky_relu, silu, hardswish and gelu shaped like torch.nn.functional: arguments
checked here, then ``torch.ops.cnn.activation`` (cnn/ops/activation.py)."""
import numbers

import torch

from ..kernels.runtime import FLOAT_DTYPES, check_device
from ..ops import activation as ops
from ..ops.registry import is_traced, tracing
from .relu import check_inplace

# relu6 is torch's hardtanh(x, 0, 6), which takes integer tensors too (the others refuse them).
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_RELU6_DTYPES = FLOAT_DTYPES + _INTEGER_DTYPES
_GELU_CODES = {"none": ops.GELU, "tanh": ops.GELU_TANH}


def _plain_eager(input, inplace, dtypes=FLOAT_DTYPES) -> bool:
    """Whether a call passes every check below and may go straight to the launchers'
    autograd Function: out of place, a plain tensor of a dtype the kernel takes, nothing
    tracing (LibraryOp's dispatch would ask again)."""
    return type(input) is torch.Tensor and not inplace and input.dtype in dtypes \
        and not tracing()


def _check_input(name: str, input) -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name}(): argument 'input' (position 1) must be Tensor, not "
                        f"{type(input).__name__}")


def _check_dtype(input: torch.Tensor, torch_op, dtypes=FLOAT_DTYPES) -> None:
    """A dtype our kernel does not take raises torch's own error, read from torch's op on an
    empty tensor of that dtype; one that torch takes and we do not (silu of a complex tensor)
    raises NotImplementedError (so routing runs torch's op)."""
    if input.dtype in dtypes:
        return
    with torch._C.DisableTorchFunction():  # no routing of the probe
        torch_op(torch.empty(0, dtype=input.dtype, device=input.device))
    raise NotImplementedError(f"cnn: {torch_op.__name__} of {input.dtype} tensors is not "
                              "implemented")


def _apply(input: torch.Tensor, act: int, slope: float, inplace: bool) -> torch.Tensor:
    traced = is_traced((input,))
    if inplace and not traced:
        # Eager only: a traced in-place op is functionalized, and autograd's own checks apply.
        check_inplace(input)
    check_device(input)
    if not inplace:
        return ops.activation(input, act, slope)
    if traced:
        # A custom op may not return its input: compute, then copy back (functionalized). The
        # op saves its input for backward, so it gets a copy that the write leaves intact.
        return input.copy_(ops.activation(input.clone(), act, slope))
    return ops.InplaceActivationFunction.apply(input, act, slope)


def relu6(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.relu6``: min(max(x, 0), 6), any shape and strides,
    float or integer dtypes; the result is laid out like input (inplace=True: input itself)."""
    if _plain_eager(input, inplace, _RELU6_DTYPES):
        check_device(input)
        return ops.activation_eager(input, ops.RELU6, 0.0)
    _check_input("relu6", input)
    _check_dtype(input, torch._C._nn.relu6, FLOAT_DTYPES + _INTEGER_DTYPES)
    return _apply(input, ops.RELU6, 0.0, inplace)


def _slope(negative_slope) -> float:
    if isinstance(negative_slope, torch.Tensor) and negative_slope.dim() == 0:
        negative_slope = negative_slope.item()
    if isinstance(negative_slope, numbers.Real):
        return float(negative_slope)
    if isinstance(negative_slope, numbers.Number):  # complex
        raise RuntimeError("value cannot be converted to type float without overflow")
    raise TypeError("leaky_relu(): argument 'negative_slope' (position 2) must be Number, not "
                    f"{type(negative_slope).__name__}")


def leaky_relu(input: torch.Tensor, negative_slope: float = 0.01,
               inplace: bool = False) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.leaky_relu``: x if x > 0 else negative_slope * x, any
    shape and strides, float dtypes; laid out like input (inplace=True: input itself; its
    backward with a negative slope raises torch's error)."""
    if type(negative_slope) is float and _plain_eager(input, inplace):
        check_device(input)
        return ops.activation_eager(input, ops.LEAKY_RELU, negative_slope)
    _check_input("leaky_relu", input)
    slope = _slope(negative_slope)
    _check_dtype(input, torch._C._nn.leaky_relu)
    return _apply(input, ops.LEAKY_RELU, slope, inplace)


def silu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.silu``: x * sigmoid(x), any shape and strides, float
    dtypes; laid out like input (inplace=True: input itself)."""
    if _plain_eager(input, inplace):
        check_device(input)
        return ops.activation_eager(input, ops.SILU, 0.0)
    _check_input("silu", input)
    _check_dtype(input, torch._C._nn.silu)
    return _apply(input, ops.SILU, 0.0, inplace)


def hardswish(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.hardswish``: x * min(max(x + 3, 0), 6) / 6, any shape
    and strides, float dtypes; laid out like input (inplace=True: input itself)."""
    if _plain_eager(input, inplace):
        check_device(input)
        return ops.activation_eager(input, ops.HARDSWISH, 0.0)
    _check_input("hardswish", input)
    _check_dtype(input, torch._C._nn.hardswish)
    return _apply(input, ops.HARDSWISH, 0.0, inplace)


def gelu(input: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.gelu``: x * Phi(x) (approximate='none') or its tanh
    approximation (approximate='tanh'), any shape and strides, float dtypes; laid out like
    input."""
    if type(approximate) is str and approximate in _GELU_CODES and _plain_eager(input, False):
        check_device(input)
        return ops.activation_eager(input, _GELU_CODES[approximate], 0.0)
    _check_input("gelu", input)
    if not isinstance(approximate, str):
        raise TypeError(f"gelu(): argument 'approximate' must be str, not "
                        f"{type(approximate).__name__}")
    if approximate not in ("none", "tanh"):
        raise RuntimeError("approximate argument must be either none or tanh.")
    _check_dtype(input, torch._C._nn.gelu)
    return _apply(input, ops.GELU if approximate == "none" else ops.GELU_TANH, 0.0, False)


__all__ = ["relu6", "leaky_relu", "silu", "hardswish", "gelu"]
