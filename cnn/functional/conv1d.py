"""conv1d and conv_transpose1d shaped like torch.nn.functional: arguments checked here in 1-D
terms (torch's rules and errors, 1-D shapes in the messages), then the 2-D ops on a view with
unit height, as torch itself runs them:

    x (N, C, L) -> (N, C, 1, L),  w (C_out, C_in/groups, K) -> (C_out, C_in/groups, 1, K)

so stride (1, s), padding (0, p), dilation (1, d), output_padding (0, op); the result's unit
height is dropped again. Views, no copies: the kernels and their gradients are conv2d's and
conv_transpose2d's (cnn/ops/conv2d.py, cnn/ops/conv_transpose2d.py).
"""
import torch

from ..kernels.runtime import check_device, is_channels_last
from ..ops import conv2d as conv2d_ops
from ..ops import conv_transpose2d as conv_transpose2d_ops
from .conv2d import autocast_to_lower_precision
from .conv2d_args import check_conv2d_args, check_conv2d_types
from .conv_transpose2d import check_conv_transpose_args, check_conv_transpose_types


def _as_1d(out: torch.Tensor, input: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(N, C_out, 1, L_out) -> (N, C_out, L_out) in torch's 1-D layout. torch makes the
    (batched) input contiguous before its 2-D view, so a channels-innermost input gives a
    contiguous output, but a contiguous one whose view suggests channels_last anyway (L == 1
    with channels innermost, e.g. a permuted (C, 1) unbatched input) gives channels
    innermost, as a weight that has them innermost does. (A copy made contiguous never
    suggests channels_last: no copy needed to tell.)"""
    out = out.squeeze(2)
    channels_innermost = is_channels_last(weight.unsqueeze(2)) or \
        input.is_contiguous() and is_channels_last(input.unsqueeze(2))
    if not out.is_contiguous() and not channels_innermost:
        out = out.contiguous()
    return out


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Drop-in for ``torch.nn.functional.conv1d``, running the Triton kernels.

    input: (N, C_in, L) or unbatched (C_in, L); weight: (C_out, C_in/groups, K); bias: (C_out,)
    or None. padding: int, 1-tuple, 'same' or 'valid'.
    Returns (N, C_out, L_out) (or (C_out, L_out)), L_out = (L + 2p - d*(K-1) - 1) // s + 1.
    """
    check_conv2d_types(input, weight, bias, stride, padding, dilation, groups, op="conv1d",
                       dims=1)
    input, weight, bias = autocast_to_lower_precision(input, weight, bias)
    unbatched = input.dim() == 2
    batched = input.unsqueeze(0) if unbatched else input
    (s,), padding, (d,) = check_conv2d_args(batched, weight, bias, stride, padding, dilation,
                                            groups, op="conv1d", dims=1)
    check_device(batched, weight, bias)
    out = conv2d_ops.conv2d(batched.unsqueeze(2), weight.unsqueeze(2), bias, [1, s],
                            [0, 0, *padding], [1, d], groups)
    out = _as_1d(out, batched, weight)
    return out.squeeze(0) if unbatched else out


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Drop-in for ``torch.nn.functional.conv_transpose1d``, running the Triton kernels.

    input: (N, C_in, L) or unbatched (C_in, L); weight: (C_in, C_out/groups, K); bias: (C_out,)
    or None. Returns (N, C_out, L_out) (or (C_out, L_out)),
    L_out = (L-1)*stride - 2*padding + dilation*(K-1) + output_padding + 1.
    """
    check_conv_transpose_types(input, weight, bias, stride, padding, output_padding, groups,
                               dilation, op="conv_transpose1d", dims=1)
    input, weight, bias = autocast_to_lower_precision(input, weight, bias)
    unbatched = input.dim() == 2
    batched = input.unsqueeze(0) if unbatched else input
    (s,), (p,), (op,), (d,) = check_conv_transpose_args(
        batched, weight, bias, stride, padding, output_padding, groups, dilation,
        op="conv_transpose1d", dims=1)
    check_device(batched, weight, bias)
    out = conv_transpose2d_ops.conv_transpose2d(batched.unsqueeze(2), weight.unsqueeze(2), bias,
                                                [1, s], [0, p], [0, op], groups, [1, d])
    out = _as_1d(out, batched, weight)
    return out.squeeze(0) if unbatched else out
