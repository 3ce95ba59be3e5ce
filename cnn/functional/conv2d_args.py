"""Argument parsing and validation for conv2d, with torch's rules and torch's errors.

Everything here runs before any kernel launches.
"""
import operator

import torch

from kernels.runtime import FLOAT_DTYPES


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


def _index(value, name: str) -> int:
    """An int of conv2d's int[2] argument ``name``, with torch's TypeError for a float or a
    bool."""
    expected = f"conv2d(): argument '{name}' must be tuple of ints"
    return parse_int(value, f"{expected}, not bool",
                     f"{expected}, but found an element of type {{type}}")


def pair(value, name: str) -> tuple:
    """An int or a 1- or 2-sequence of ints -> (a, b), as torch accepts them."""
    if not isinstance(value, (list, tuple)):
        v = _index(value, name)
        return (v, v)
    value = tuple(_index(v, name) for v in value)
    if len(value) == 1:
        return (value[0], value[0])
    if len(value) != 2:
        raise RuntimeError(
            f"expected {name} to be a single integer value or a list of 2 values to match the "
            f"convolution dimensions, but got {name}={list(value)}")
    return value


def conv_padding(padding, weight_shape, stride, dilation) -> tuple:
    """torch's padding argument -> (top, bottom, left, right).

    'same' pads dilation*(k-1) in total per dimension, the odd element going to the bottom/right
    as torch does; 'valid' is no padding.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise RuntimeError(f"Invalid padding string: '{padding}'")
        if any(s != 1 for s in stride):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        total_h = dilation[0] * (weight_shape[2] - 1)
        total_w = dilation[1] * (weight_shape[3] - 1)
        return (total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)
    ph, pw = pair(padding, "padding")
    return (ph, ph, pw, pw)


def check_conv2d_types(input, weight, bias, stride, padding, dilation, groups) -> None:
    """torch's argument parsing: a TypeError for an argument of the wrong type, before any
    other check."""
    for position, (name, value) in enumerate((("input", input), ("weight", weight),
                                              ("bias", bias)), start=1):
        if not isinstance(value, torch.Tensor) and not (name == "bias" and value is None):
            raise TypeError(f"conv2d(): argument '{name}' (position {position}) must be "
                            f"Tensor, not {type(value).__name__}")
    pair(stride, "stride")
    pair(dilation, "dilation")
    if not isinstance(padding, str):
        pair(padding, "padding")
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"conv2d(): argument 'groups' must be int, not {type(groups).__name__}")


def check_conv2d_args(input: torch.Tensor, weight: torch.Tensor, bias, stride, padding,
                      dilation, groups: int):
    """Validate conv2d's arguments; returns normalised (stride, padding4, dilation).

    input: (N, C_in, H, W) (already batched), weight: (C_out, C_in/groups, KH, KW).
    """
    if weight.dim() != 4:
        raise RuntimeError(
            f"Expected 4D weight for conv2d, but got weight of size {list(weight.shape)}")
    if input.dim() != 4:
        raise RuntimeError(
            "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: "
            f"{list(input.shape)}")
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    if any(s <= 0 for s in stride):
        raise RuntimeError("non-positive stride is not supported")
    if any(d < 0 for d in dilation):
        raise RuntimeError("dilation should be greater than zero")
    if any(d == 0 for d in dilation) and input.numel():  # torch lets an empty input through
        raise RuntimeError("non-positive dilation is not supported")
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"conv2d(): argument 'groups' must be int, not {type(groups).__name__}")
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    padding4 = conv_padding(padding, weight.shape, stride, dilation)
    if any(p < 0 for p in padding4):
        raise RuntimeError("negative padding is not supported")

    if input.dtype not in FLOAT_DTYPES:
        # torch's CPU convolution also takes integer and complex tensors; ours are float-only.
        raise NotImplementedError(
            f"cnn.conv2d supports float16, bfloat16, float32 and float64, got {input.dtype}")
    if input.dtype != weight.dtype or input.device != weight.device:
        raise RuntimeError(
            f"Input type ({input.dtype}, {input.device}) and weight type ({weight.dtype}, "
            f"{weight.device}) should be the same")
    c_out, c_in_g, kh, kw = weight.shape
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
        if bias.dtype != input.dtype or bias.device != input.device:
            raise RuntimeError(
                f"Input type ({input.dtype}, {input.device}) and bias type ({bias.dtype}, "
                f"{bias.device}) should be the same")
        if bias.dim() != 1 or bias.shape[0] != c_out:
            raise RuntimeError(
                f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional "
                f"with {c_out} elements, but got bias of size {list(bias.shape)} instead")
    padded_h = input.shape[2] + padding4[0] + padding4[1]
    padded_w = input.shape[3] + padding4[2] + padding4[3]
    eff_h = dilation[0] * (kh - 1) + 1
    eff_w = dilation[1] * (kw - 1) + 1
    if padded_h < eff_h or padded_w < eff_w:
        raise RuntimeError(
            f"Calculated padded input size per channel: ({padded_h} x {padded_w}). Kernel size: "
            f"({eff_h} x {eff_w}). Kernel size can't be greater than actual input size")
    return stride, padding4, dilation
