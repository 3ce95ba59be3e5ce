"""conv_transpose2d as a ``torch.ops.cnn`` op over conv2d's launchers: no kernel of its own.

    cnn::conv_transpose2d(x, w, b?, stride, padding, output_padding, groups, dilation) -> y
        x (N, C_in, H, W), w (C_in, C_out/groups, KH, KW), b (C_out,) or None,
        y (N, C_out, H_out, W_out),  H_out = (H-1)*sh - 2*ph + dh*(KH-1) + oph + 1  (W alike);
        the arguments are aten::conv_transpose2d's, in its order, as pairs.

A transposed convolution is the input gradient of a convolution. Take the conv2d
    z = conv(u, w)      u (N, C_out, H_out, W_out) -> z (N, C_in, H, W)
with the same stride, dilation and groups (C_in plays conv2d's C_out), top/left padding p and
bottom/right padding p - output_padding. The bottom/right padding only sets how many rows z
has (the kernels read the top/left one): with it, z has exactly H rows whatever output_padding
(torch allows up to max(stride, dilation) - 1), even where that padding is negative. Then
    y  = dgrad(x, w) + b        (x in the place of dz; ``conv2d_input_grad``, whose ``input``
                                  argument only lends y's shape, dtype and layout)
and, conv being linear in u and in w, the gradients are conv2d's other two ops with the roles
swapped:
    dx = conv(dy, w)            the conv whose input gradient y is, applied to dy
    dw = wgrad(x, dy)           conv2d_weight_grad with x as its dz and dy as its input:
                                dw[ci, co, kh, kw] = sum x[n, ci, oh, ow] * dy[n, co, ih, iw]
                                with ih = oh*sh - ph + kh*dh (iw alike), co within ci's group
    db = sum_{n, h, w} dy
All three are differentiable (cnn/ops/conv2d.py closes its ops under differentiation), so
double backward and every higher order comes for free. Layouts follow torch's rules: y is
channels_last when x or w is, dx is laid out like x, dw like w. The bias is added after the
launch, in place (the input-gradient kernel has no bias epilogue).
Arguments are validated by cnn.functional before they get here.
"""
import torch

from ..kernels import conv2d as launchers
from ..kernels.runtime import output_memory_format
from .conv2d import conv2d, conv2d_weight_grad, declared, geometry
from .registry import LibraryOp


def output_shape(input_shape, weight_shape, stride, padding, output_padding, groups,
                 dilation) -> tuple:
    """y's shape (N, C_out, H_out, W_out) from x's and w's."""
    n, _, *sizes = input_shape
    _, c_out_g, *kernel = weight_shape
    return (n, c_out_g * groups, *((size - 1) * s - 2 * p + d * (k - 1) + op + 1
                                   for size, k, s, p, op, d in zip(sizes, kernel, stride, padding,
                                                                   output_padding, dilation,
                                                                   strict=True)))


def conv2d_args(stride, padding, output_padding, groups, dilation) -> tuple:
    """(stride, padding, dilation, groups) of the conv2d whose input gradient this is, as
    cnn/ops/conv2d.py takes them: padding (top, bottom, left, right), the bottom/right one
    reduced by output_padding (see the module docstring)."""
    (ph, pw), (oph, opw) = padding, output_padding
    return list(stride), [ph, ph - oph, pw, pw - opw], list(dilation), groups


def shape_template(input: torch.Tensor, shape, memory_format) -> torch.Tensor:
    """A tensor of y's shape, dtype, device and layout for the input-gradient launcher, which
    reads nothing else of its ``input``: an expanded scalar (no memory) for NCHW; channels_last
    has to be told by real strides, so an empty tensor of that layout then."""
    if memory_format == torch.channels_last:
        return torch.empty(shape, dtype=input.dtype, device=input.device,
                           memory_format=memory_format)
    return input.new_empty(()).expand(shape)


# ------------------------------------------------------------------------ conv_transpose2d

def _conv_transpose2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      stride: list[int], padding: list[int], output_padding: list[int],
                      groups: int, dilation: list[int]) -> torch.Tensor:
    shape = output_shape(input.shape, weight.shape, stride, padding, output_padding, groups,
                         dilation)
    layout = output_memory_format(input, weight)
    g = geometry(shape, weight.shape, *conv2d_args(stride, padding, output_padding, groups,
                                                   dilation))
    y = launchers.conv2d_input_grad(input, weight, shape_template(input, shape, layout), g)
    if bias is not None:
        y.add_(bias.view(1, -1, 1, 1))
    return declared(y, layout)


def _conv_transpose2d_fake(input, weight, bias, stride, padding, output_padding, groups,
                           dilation):
    shape = output_shape(input.shape, weight.shape, stride, padding, output_padding, groups,
                         dilation)
    return input.new_empty(shape).contiguous(memory_format=output_memory_format(input, weight))


def _conv_transpose2d_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, output_padding, groups, dilation = inputs
    ctx.args = conv2d_args(stride, padding, output_padding, groups, dilation)
    ctx.has_bias = bias is not None
    ctx.input_layout = output_memory_format(input)
    # x is wgrad's operand; w (a parameter, no extra memory) dx's operand and wgrad's template.
    ctx.save_for_backward(input if ctx.needs_input_grad[1] else None, weight)


def _conv_transpose2d_backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    grad_input = grad_weight = grad_bias = None
    if need_input:
        grad_input = declared(conv2d(grad_output, weight, None, *ctx.args), ctx.input_layout)
    if need_weight:
        grad_weight, _ = conv2d_weight_grad(input, grad_output, weight, *ctx.args, False)
    if need_bias and ctx.has_bias:
        grad_bias = grad_output.sum((0, 2, 3))
    return grad_input, grad_weight, grad_bias, None, None, None, None, None


conv_transpose2d = LibraryOp("conv_transpose2d", _conv_transpose2d, _conv_transpose2d_fake,
                             setup_context=_conv_transpose2d_setup,
                             backward=_conv_transpose2d_backward)
conv_transpose2d.register_autocast(cast=3)

__all__ = ["conv_transpose2d", "conv2d_args", "output_shape"]
