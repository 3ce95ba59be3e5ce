"""conv_transpose2d shaped like torch.nn.functional: arguments checked here (torch's rules and
errors, before any kernel launches), then ``torch.ops.cnn.conv_transpose2d``
(cnn/ops/conv_transpose2d.py), which runs conv2d's input-gradient kernel."""
from ..kernels.runtime import check_device
from ..ops import conv_transpose2d as ops
from .conv2d import autocast_to_lower_precision
from .conv2d_args import (
    check_bias_shape,
    check_dtypes_and_devices,
    check_groups_type,
    check_ranks,
    check_stride_dilation_groups,
    check_tensor_args,
    ints,
)


def check_conv_transpose_types(input, weight, bias, stride, padding, output_padding, groups,
                               dilation, *, op: str = "conv_transpose2d", dims: int = 2) -> None:
    """torch's argument parsing: a TypeError for an argument of the wrong type (a padding
    string too: transposed convolutions take none), before any other check."""
    check_tensor_args(op, input=input, weight=weight, bias=bias)
    for name, value in (("stride", stride), ("padding", padding),
                        ("output_padding", output_padding), ("dilation", dilation)):
        ints(value, name, dims, op)
    check_groups_type(groups, op)


def check_conv_transpose_args(input, weight, bias, stride, padding, output_padding, groups,
                              dilation, *, op: str = "conv_transpose2d", dims: int = 2):
    """Validate a transposed convolution's arguments in torch's order; returns normalised
    (stride, padding, output_padding, dilation), each a dims-tuple.

    input: (N, C_in, *spatial) (already batched), weight: (C_in, C_out/groups, *kernel).
    """
    check_ranks(input, weight, op, dims)
    stride, dilation = check_stride_dilation_groups(input, stride, dilation, groups, op, dims)
    padding = ints(padding, "padding", dims, op)
    output_padding = ints(output_padding, "output_padding", dims, op)
    if any(p < 0 for p in padding):
        raise RuntimeError("negative padding is not supported")
    if any(p < 0 for p in output_padding):
        raise RuntimeError("negative output_padding is not supported")
    check_dtypes_and_devices(input, weight, None, op)
    c_in, c_out_g = weight.shape[:2]
    if c_in < groups:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be at least {groups} at dimension 0, "
            f"but got weight of size {list(weight.shape)} instead")
    if c_in % groups != 0:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
            f"but got weight of size {list(weight.shape)} instead")
    if weight.numel() == 0:
        raise RuntimeError(f"non-empty {dims + 2}D weight tensor expected, but got: "
                           f"{list(weight.shape)}")
    if input.shape[1] != c_in:
        raise RuntimeError(
            f"Given transposed=1, weight of size {list(weight.shape)}, expected "
            f"input{list(input.shape)} to have {c_in} channels, but got {input.shape[1]} "
            "channels instead")
    if bias is not None:
        check_dtypes_and_devices(input, weight, bias, op)
        check_bias_shape(bias, weight, c_out_g * groups, prefix="Given transposed=1, ")
    if input.shape[0] and input.shape[1] and 0 in input.shape[2:]:
        raise RuntimeError("Only zero batch or zero channel inputs are supported, but got "
                           f"input shape: {list(input.shape)}")
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation, strict=True)):
        o, s, d = output_padding, stride, dilation
        if dims == 1:  # torch's message names the 2-D view (unit height) a 1-D one runs as
            o, s, d = (0, *o), (1, *s), (1, *d)
        raise RuntimeError(
            "output padding must be smaller than either stride or dilation, but got "
            f"output_padding_height: {o[0]} output_padding_width: {o[1]} stride_height: {s[0]} "
            f"stride_width: {s[1]} dilation_height: {d[0]} dilation_width: {d[1]}")
    sizes = ops.output_shape(input.shape, weight.shape, stride, padding, output_padding, groups,
                             dilation)[2:]
    if any(size <= 0 for size in sizes):
        raise RuntimeError(
            f"Given input size per channel: ({' x '.join(map(str, input.shape[2:]))}). "
            f"Calculated output size per channel: ({' x '.join(map(str, sizes))}). Output size "
            "is too small")
    return stride, padding, output_padding, dilation


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Drop-in for ``torch.nn.functional.conv_transpose2d``, running the Triton kernels.

    input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_in, C_out/groups, KH, KW);
    bias: (C_out,) or None. stride, padding, output_padding, dilation: int or pair.
    Returns (N, C_out, H_out, W_out) (or (C_out, H_out, W_out)),
    H_out = (H-1)*stride - 2*padding + dilation*(KH-1) + output_padding + 1, channels_last when
    the input or the weight is.
    """
    check_conv_transpose_types(input, weight, bias, stride, padding, output_padding, groups,
                               dilation)
    input, weight, bias = autocast_to_lower_precision(input, weight, bias)
    unbatched = input.dim() == 3
    batched = input.unsqueeze(0) if unbatched else input
    stride, padding, output_padding, dilation = check_conv_transpose_args(
        batched, weight, bias, stride, padding, output_padding, groups, dilation)
    check_device(batched, weight, bias)
    out = ops.conv_transpose2d(batched, weight, bias, list(stride), list(padding),
                               list(output_padding), groups, list(dilation))
    return out.squeeze(0) if unbatched else out
