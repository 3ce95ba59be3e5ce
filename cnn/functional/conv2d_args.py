"""Argument parsing and validation for the convolutions, with torch's rules and torch's errors.

conv2d's checks, written over any number of spatial dimensions (``dims``: 2 for conv2d, 1 for
conv1d) and naming the function they check (``op``), so the 1-D and transposed convolutions
(cnn.functional.conv1d, cnn.functional.conv_transpose2d) share them and report their own
shapes. Everything here runs before any kernel launches.
"""
import operator

import torch

from ..kernels.runtime import FLOAT_DTYPES


def parse_int(value, bool_error: str, type_error: str) -> int:
    """An int as torch's argument parser takes one: anything with __index__ (a 0-dim integer
    tensor too) but a bool. Else TypeError: bool_error for a bool, type_error (whose
    ``{type}`` names the value's type) for anything else (a float, a string, ...)."""
    if isinstance(value, bool):
        raise TypeError(bool_error)
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(type_error.format(type=type(value).__name__)) from None


def _index(value, name: str, op: str) -> int:
    """An int of op's int[dims] argument ``name``, with torch's TypeError for a float or a
    bool."""
    expected = f"{op}(): argument '{name}' must be tuple of ints"
    return parse_int(value, f"{expected}, not bool",
                     f"{expected}, but found an element of type {{type}}")


def ints(value, name: str, dims: int = 2, op: str = "conv2d") -> tuple:
    """An int or a 1- or dims-sequence of ints -> a dims-tuple, as torch accepts them."""
    if not isinstance(value, (list, tuple)):
        return (_index(value, name, op),) * dims
    value = tuple(_index(v, name, op) for v in value)
    if len(value) == 1:
        return value * dims
    if len(value) != dims:
        raise RuntimeError(
            f"expected {name} to be a single integer value or a list of {dims} values to match "
            f"the convolution dimensions, but got {name}={list(value)}")
    return value


def conv_padding(padding, weight_shape, stride, dilation, op: str = "conv2d") -> tuple:
    """torch's padding argument -> (before, after) per spatial dimension, flat: (top, bottom,
    left, right) in 2-D, (left, right) in 1-D.

    'same' pads dilation*(k-1) in total per dimension, the odd element going to the bottom/right
    as torch does; 'valid' is no padding.
    """
    dims = len(stride)
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0) * dims
        if padding != "same":
            raise RuntimeError(f"Invalid padding string: '{padding}'")
        if any(s != 1 for s in stride):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        totals = [d * (k - 1) for d, k in zip(dilation, weight_shape[2:], strict=True)]
        return tuple(p for total in totals for p in (total // 2, total - total // 2))
    return tuple(p for p in ints(padding, "padding", dims, op) for _ in range(2))


def check_tensor_args(op: str, **tensors) -> None:
    """torch's argument parsing of op's tensor arguments, in order (input, weight, bias): a
    TypeError for one that is not a tensor (bias may be None)."""
    for position, (name, value) in enumerate(tensors.items(), start=1):
        if not isinstance(value, torch.Tensor) and not (name == "bias" and value is None):
            raise TypeError(f"{op}(): argument '{name}' (position {position}) must be "
                            f"Tensor, not {type(value).__name__}")


def check_groups_type(groups, op: str = "conv2d") -> None:
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"{op}(): argument 'groups' must be int, not {type(groups).__name__}")


def check_conv2d_types(input, weight, bias, stride, padding, dilation, groups, *,
                       op: str = "conv2d", dims: int = 2) -> None:
    """torch's argument parsing: a TypeError for an argument of the wrong type, before any
    other check."""
    check_tensor_args(op, input=input, weight=weight, bias=bias)
    ints(stride, "stride", dims, op)
    ints(dilation, "dilation", dims, op)
    if not isinstance(padding, str):
        ints(padding, "padding", dims, op)
    check_groups_type(groups, op)


def check_ranks(input: torch.Tensor, weight: torch.Tensor, op: str, dims: int) -> None:
    """input (N, C, *spatial) already batched, weight (C_out, C_in/groups, *kernel)."""
    if weight.dim() != dims + 2:
        raise RuntimeError(
            f"Expected {dims + 2}D weight for {op}, but got weight of size "
            f"{list(weight.shape)}")
    if input.dim() != dims + 2:
        raise RuntimeError(
            f"Expected {dims + 1}D (unbatched) or {dims + 2}D (batched) input to {op}, but got "
            f"input of size: {list(input.shape)}")


def check_stride_dilation_groups(input, stride, dilation, groups, op: str, dims: int):
    """Parsed and checked (stride, dilation); torch's errors for non-positive values."""
    stride = ints(stride, "stride", dims, op)
    dilation = ints(dilation, "dilation", dims, op)
    if any(s <= 0 for s in stride):
        raise RuntimeError("non-positive stride is not supported")
    if any(d < 0 for d in dilation):
        raise RuntimeError("dilation should be greater than zero")
    if any(d == 0 for d in dilation) and input.numel():  # torch lets an empty input through
        raise RuntimeError("non-positive dilation is not supported")
    check_groups_type(groups, op)
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    return stride, dilation


def check_dtypes_and_devices(input, weight, bias, op: str) -> None:
    """Floating input, and weight and bias of input's dtype and device."""
    if input.dtype not in FLOAT_DTYPES:
        # torch's CPU convolution also takes integer and complex tensors; ours are float-only.
        raise NotImplementedError(
            f"cnn.{op} supports float16, bfloat16, float32 and float64, got {input.dtype}")
    if input.dtype != weight.dtype or input.device != weight.device:
        raise RuntimeError(
            f"Input type ({input.dtype}, {input.device}) and weight type ({weight.dtype}, "
            f"{weight.device}) should be the same")
    if bias is not None and (bias.dtype != input.dtype or bias.device != input.device):
        raise RuntimeError(
            f"Input type ({input.dtype}, {input.device}) and bias type ({bias.dtype}, "
            f"{bias.device}) should be the same")


def check_bias_shape(bias, weight, out_channels: int, prefix: str = "") -> None:
    """bias None or (out_channels,); ``prefix`` starts torch's message ("Given transposed=1, "
    for the transposed convolutions)."""
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != out_channels):
        raise RuntimeError(
            f"{prefix}Given weight of size {list(weight.shape)}, expected bias to be "
            f"1-dimensional with {out_channels} elements, but got bias of size "
            f"{list(bias.shape)} instead")


def check_conv2d_args(input: torch.Tensor, weight: torch.Tensor, bias, stride, padding,
                      dilation, groups: int, *, op: str = "conv2d", dims: int = 2):
    """Validate conv2d's arguments (conv1d's with dims=1, op="conv1d"); returns normalised
    (stride, padding, dilation), padding as (before, after) per dimension (``conv_padding``).

    input: (N, C_in, *spatial) (already batched), weight: (C_out, C_in/groups, *kernel).
    """
    check_ranks(input, weight, op, dims)
    stride, dilation = check_stride_dilation_groups(input, stride, dilation, groups, op, dims)
    padding = conv_padding(padding, weight.shape, stride, dilation, op)
    if any(p < 0 for p in padding):
        raise RuntimeError("negative padding is not supported")

    check_dtypes_and_devices(input, weight, None, op)
    c_out, c_in_g = weight.shape[:2]
    if c_out % groups != 0:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
            f"but got weight of size {list(weight.shape)} instead")
    if input.shape[1] != c_in_g * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected "
            f"input{list(input.shape)} to have {c_in_g * groups} channels, but got "
            f"{input.shape[1]} channels instead")
    if bias is not None:
        check_dtypes_and_devices(input, weight, bias, op)
        check_bias_shape(bias, weight, c_out)
    padded = [size + padding[2 * i] + padding[2 * i + 1]
              for i, size in enumerate(input.shape[2:])]
    effective = [d * (k - 1) + 1 for d, k in zip(dilation, weight.shape[2:], strict=True)]
    if any(p < e for p, e in zip(padded, effective, strict=True)):
        raise RuntimeError(
            f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). "
            f"Kernel size: ({' x '.join(map(str, effective))}). Kernel size can't be greater "
            "than actual input size")
    if input.shape[0] and input.shape[1] and 0 in input.shape[2:]:
        # torch names the 2-D view it runs a 1-D convolution as
        shape = list(input.shape) if dims == 2 else [*input.shape[:2], 1, *input.shape[2:]]
        raise RuntimeError("Only zero batch or zero channel inputs are supported, but got "
                           f"input shape: {shape}")
    return stride, padding, dilation
