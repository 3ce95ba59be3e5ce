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
from ..ops import conv1d as ops
from ..ops import conv2d as conv2d_ops
from ..ops import conv_transpose2d as conv_transpose2d_ops
from ..ops.registry import tracing
from .conv2d import autocast_to_lower_precision
from .conv2d_args import check_conv2d_args, check_conv2d_types
from .conv_transpose2d import check_conv_transpose_args, check_conv_transpose_types

# Plain eager calls whose arguments were checked before, by signature (``_conv1d_key``) ->
# (stride, padding (left, right), dilation, whether the output keeps channels innermost).
CHECKED_CALLS = ops.CHECKED_CALLS


def _channels_innermost(input: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the 1-D output keeps the 2-D op's channels-innermost layout: torch makes the
    (batched) input contiguous before its 2-D view, so a channels-innermost input gives a
    contiguous output, but a contiguous one whose view suggests channels_last anyway (L == 1
    with channels innermost, e.g. a permuted (C, 1) unbatched input) gives channels
    innermost, as a weight that has them innermost does. (A copy made contiguous never
    suggests channels_last: no copy needed to tell.)"""
    return is_channels_last(weight.unsqueeze(2)) or \
        input.is_contiguous() and is_channels_last(input.unsqueeze(2))


def _as_1d(out: torch.Tensor, channels_innermost: bool) -> torch.Tensor:
    """(N, C_out, 1, L_out) -> (N, C_out, L_out) in torch's 1-D layout
    (``_channels_innermost``)."""
    out = out.squeeze(2)
    if not channels_innermost and not out.is_contiguous():
        out = out.contiguous()
    return out


def _tensor_key(t):
    return None if t is None else (type(t), t.shape, t.stride(), t.dtype, t.device)


def _option_key(value):
    """An int, a str, or a tuple of ints (a list made a tuple) as it is; ... (Ellipsis, no
    key) for anything else: a bool or a numpy int equals an int as a key, and only the
    checking path reads those."""
    kind = type(value)
    if kind is int or kind is str:
        return value
    if (kind is tuple or kind is list) and all(type(v) is int for v in value):
        return tuple(value)
    return ...


def _conv1d_key(input, weight, bias, stride, padding, dilation, groups) -> tuple | None:
    """The CHECKED_CALLS key of a call: every tensor's type, shape, strides, dtype and
    device, and the options. None where the checks must run: a tensor subclass input,
    tracing (sizes may be symbolic), autocast (it casts first), options of other types."""
    if type(input) is not torch.Tensor or type(groups) is not int or tracing() or \
            torch.is_autocast_enabled(input.device.type):
        return None
    options = (_option_key(stride), _option_key(padding), _option_key(dilation))
    if ... in options or not isinstance(weight, torch.Tensor):
        return None
    return (_tensor_key(input), _tensor_key(weight), _tensor_key(bias), *options, groups)


def _checked_conv1d(input, weight, bias, stride, padding, dilation, groups):
    """((input, weight, bias) as the op takes them (autocast applied), the CHECKED_CALLS
    entry), every argument checked as torch checks it."""
    check_conv2d_types(input, weight, bias, stride, padding, dilation, groups, op="conv1d",
                       dims=1)
    input, weight, bias = autocast_to_lower_precision(input, weight, bias)
    batched = input.unsqueeze(0) if input.dim() == 2 else input
    (s,), padding, (d,) = check_conv2d_args(batched, weight, bias, stride, padding, dilation,
                                            groups, op="conv1d", dims=1)
    check_device(batched, weight, bias)
    return (input, weight, bias), (s, tuple(padding), d, _channels_innermost(batched, weight))


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Drop-in for ``torch.nn.functional.conv1d``, running the Triton kernels.

    input: (N, C_in, L) or unbatched (C_in, L); weight: (C_out, C_in/groups, K); bias: (C_out,)
    or None. padding: int, 1-tuple, 'same' or 'valid'.
    Returns (N, C_out, L_out) (or (C_out, L_out)), L_out = (L + 2p - d*(K-1) - 1) // s + 1.
    """
    key = _conv1d_key(input, weight, bias, stride, padding, dilation, groups)
    checked = None if key is None else CHECKED_CALLS.get(key)
    if checked is None:
        (input, weight, bias), checked = _checked_conv1d(input, weight, bias, stride, padding,
                                                         dilation, groups)
        if key is not None:
            CHECKED_CALLS.put(key, checked)
    s, (left, right), d, channels_innermost = checked
    unbatched = input.dim() == 2
    batched = input.unsqueeze(0) if unbatched else input
    if key is not None:  # a plain eager call: the 2-D views inside one Function
        out = ops.conv1d_eager(batched, weight, bias, [1, s], [0, 0, left, right], [1, d],
                               groups, channels_innermost)
    else:
        out = _as_1d(conv2d_ops.conv2d(batched.unsqueeze(2), weight.unsqueeze(2), bias,
                                       [1, s], [0, 0, left, right], [1, d], groups),
                     channels_innermost)
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
    out = _as_1d(out, _channels_innermost(batched, weight))
    return out.squeeze(0) if unbatched else out
