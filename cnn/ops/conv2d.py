"""conv2d and its two gradients as ``torch.ops.cnn`` ops over the launchers in cnn.kernels.conv2d.

    cnn::conv2d(x, w, b?, stride, padding4, dilation, groups) -> y    (N, C_out, OH, OW)
    cnn::conv2d_input_grad(dy, w, x, ...) -> dx                         (N, C_in, H, W)
    cnn::conv2d_weight_grad(dy, x, w, ..., bias) -> (dw, db)            db (C_out,) or (0,)

The three close under differentiation, so every gradient of every order is one of them:
    y  = conv(x, w):     dx = dgrad(dy, w),           dw = wgrad(dy, x),  db = sum dy
    dx = dgrad(dy, w):   d/d(dy) = conv(ggx, w),      d/dw = wgrad(dy, ggx)
    dw = wgrad(dy, x):   d/d(dy) = conv(x, ggw),      d/dx = dgrad(dy, ggw)
    db = sum dy:         d/d(dy) = ggb broadcast over (N, OH, OW)
Arguments are validated by cnn.functional before they get here; padding is
(top, bottom, left, right).
"""
import torch

from ..kernels import conv2d as launchers
from ..kernels.conv2d import Conv2dGeometry
from ..kernels.conv2d.layout import to_channels_last
from ..kernels.runtime import output_memory_format
from .registry import LibraryOp, none_unless, placeholder


def geometry(input_shape, weight_shape, stride, padding, dilation, groups) -> Conv2dGeometry:
    return Conv2dGeometry.from_shapes(tuple(input_shape), tuple(weight_shape), stride, padding,
                                      dilation, groups)


def declared(t: torch.Tensor, memory_format) -> torch.Tensor:
    """t in the layout the fake promises (a copy only if a launcher returned another)."""
    return t if t.is_contiguous(memory_format=memory_format) else \
        t.contiguous(memory_format=memory_format)


def weight_grad_format(weight: torch.Tensor):
    """dw is laid out like weight: channels_last only for a channels_last (not also NCHW) one."""
    if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


# --------------------------------------------------------------------------------- conv2d

def _conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            stride: list[int], padding: list[int], dilation: list[int],
            groups: int) -> torch.Tensor:
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    return declared(launchers.conv2d_forward(input, weight, bias, g),
                    output_memory_format(input, weight))


def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    return input.new_empty(g.output_shape).contiguous(
        memory_format=output_memory_format(input, weight))


def _conv2d_setup(ctx, inputs, output):
    input, weight, bias, *ctx.args = inputs
    need_input, need_weight = ctx.needs_input_grad[:2]
    ctx.has_bias = bias is not None
    need_bias = ctx.needs_input_grad[2] and ctx.has_bias
    # dgrad reads x's sizes and layout, wgrad its values (db comes out of the wgrad launch,
    # so a bias-only gradient needs x too); w (a parameter, no extra memory) is dgrad's
    # operand and wgrad's template.
    ctx.save_for_backward(input if need_input or need_weight or need_bias else None, weight)


def _conv2d_backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    need_bias = need_bias and ctx.has_bias
    grad_input = grad_weight = grad_bias = None
    if need_input and (need_weight or need_bias) and grad_output.dim() == 4:
        # Both launchers read dy channels_last: convert an NCHW dy once, not once each.
        grad_output = to_channels_last(grad_output)
    if need_input:
        grad_input = conv2d_input_grad(grad_output, weight, input, *ctx.args)
    if need_weight or need_bias:
        grad_weight, grad_bias = conv2d_weight_grad(grad_output, input, weight, *ctx.args,
                                                    need_bias)
    return (grad_input, none_unless(need_weight, grad_weight), none_unless(need_bias, grad_bias),
            None, None, None, None)


# ------------------------------------------------------------------------------ input grad

def _input_grad(grad_output: torch.Tensor, weight: torch.Tensor, input: torch.Tensor,
                stride: list[int], padding: list[int], dilation: list[int],
                groups: int) -> torch.Tensor:
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    dx = launchers.conv2d_input_grad(grad_output, weight, input, g)
    return declared(dx, output_memory_format(input))  # torch's rule: dx is laid out like x


def _input_grad_fake(grad_output, weight, input, stride, padding, dilation, groups):
    return input.new_empty(input.shape).contiguous(memory_format=output_memory_format(input))


def _input_grad_setup(ctx, inputs, output):
    grad_output, weight, input, *ctx.args = inputs
    need_dy, need_w = ctx.needs_input_grad[:2]
    ctx.save_for_backward(grad_output if need_w else None, weight, input)


def _input_grad_backward(ctx, ggx):
    grad_output, weight, input = ctx.saved_tensors
    need_dy, need_w = ctx.needs_input_grad[:2]
    gg_dy = conv2d(ggx, weight, None, *ctx.args) if need_dy else None
    gg_w = None
    if need_w:
        gg_w, _ = conv2d_weight_grad(grad_output, ggx, weight, *ctx.args, False)
    return gg_dy, gg_w, None, None, None, None, None


# ----------------------------------------------------------------------------- weight grad

def _weight_grad(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                 stride: list[int], padding: list[int], dilation: list[int], groups: int,
                 bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    dw, db = launchers.conv2d_weight_grad(grad_output, input, weight, g, need_bias=bias)
    return declared(dw, weight_grad_format(weight)), db if bias else placeholder(weight)


def _weight_grad_fake(grad_output, input, weight, stride, padding, dilation, groups, bias):
    dw = weight.new_empty(weight.shape).contiguous(memory_format=weight_grad_format(weight))
    return dw, weight.new_empty((weight.shape[0],) if bias else (0,))


def _weight_grad_setup(ctx, inputs, output):
    grad_output, input, weight, *args, ctx.bias = inputs
    ctx.args = args
    need_dy, need_x = ctx.needs_input_grad[:2]
    ctx.save_for_backward(grad_output if need_x else None, input if need_dy or need_x else None,
                          weight)


def _weight_grad_backward(ctx, ggw, ggb):
    grad_output, input, weight = ctx.saved_tensors
    need_dy, need_x = ctx.needs_input_grad[:2]
    gg_dy = gg_x = None
    if need_dy:
        gg_dy = conv2d(input, ggw, None, *ctx.args)
        if ctx.bias and ggb is not None:
            gg_dy = gg_dy + ggb.view(1, -1, 1, 1)
    if need_x:
        gg_x = conv2d_input_grad(grad_output, ggw, input, *ctx.args)
    return gg_dy, gg_x, None, None, None, None, None, None


conv2d = LibraryOp("conv2d", _conv2d, _conv2d_fake, setup_context=_conv2d_setup,
                   backward=_conv2d_backward)
conv2d_input_grad = LibraryOp("conv2d_input_grad", _input_grad, _input_grad_fake,
                              setup_context=_input_grad_setup, backward=_input_grad_backward)
conv2d_weight_grad = LibraryOp("conv2d_weight_grad", _weight_grad, _weight_grad_fake,
                               setup_context=_weight_grad_setup, backward=_weight_grad_backward)
conv2d.register_autocast(cast=3)

__all__ = ["conv2d", "conv2d_input_grad", "conv2d_weight_grad"]
