"""The standalone activations as ``torch.ops.cnn`` ops over cnn.kernels.activation.

    cnn::activation(x, act, slope) -> y                        y = a(x), laid out like x
    cnn::activation_backward(dy, x, act, slope) -> dx          dx = dy * a'(x)
    cnn::activation_second_grad(g, x, act, slope) -> gx        gx = g * a''(x)

``act`` is an activation_math code (RELU6, LEAKY_RELU, SILU, HARDSWISH, GELU, GELU_TANH),
``slope`` LEAKY_RELU's negative slope (ignored by the others). The backward works from the saved
input x. activation_backward is linear in dy, so its own backward is
    d(dx)/d(dy) . ggx = activation_backward(ggx, x)     d(dx)/dx . ggx = a''(x) * dy * ggx,
the second by activation_second_grad, which has no autograd (a third derivative raises
torch's error for an op without one).

A custom op may not return an alias of its input, so an in-place activation is no op: in
eager mode it is InplaceActivationFunction (the launcher writing into x), under tracing
cnn::activation copied back (cnn.functional.activation picks which).
"""
import torch

from ..kernels import activation as launchers
from ..kernels.activation_math import (
    ACTIVATIONS,
    GELU,
    GELU_TANH,
    HARDSWISH,
    LEAKY_RELU,
    RELU6,
    SILU,
)
from ..kernels.elementwise import MAX_DIMS, is_dense
from .registry import LibraryOp, direct_apply, direct_backward, plain_backward

# Where the output determines a'(x) as well as the input does (0 < y < 6 iff 0 < x < 6; for
# slope >= 0, y > 0 iff x > 0): an in-place forward can save its output instead of a copy.
_OUTPUT_DETERMINES_GRAD = (RELU6, LEAKY_RELU)


def _out_like(x: torch.Tensor) -> torch.Tensor:
    """The launchers' output layout: x's own when x is dense or of at most 4 dims, else
    contiguous."""
    if x.dim() > MAX_DIMS and not is_dense(x):
        return x.new_empty(x.shape)
    return torch.empty_like(x)


def _grad_like(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if x.dim() > MAX_DIMS and (grad.stride() != x.stride() or not is_dense(x)):
        return x.new_empty(x.shape)
    return torch.empty_like(x)


def _activation(x: torch.Tensor, act: int, slope: float) -> torch.Tensor:
    return launchers.activation_forward(x, act, slope)


def _activation_fake(x, act, slope):
    return _out_like(x)


def _save_input(ctx, inputs, output):
    x, ctx.act, ctx.slope = inputs
    ctx.save_for_backward(x)


def _activation_backward_fn(ctx, grad_output):
    (x,) = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None
    if plain_backward():
        return launchers.activation_backward(grad_output, x, ctx.act, ctx.slope), None, None
    return activation_backward(grad_output, x, ctx.act, ctx.slope), None, None


def _backward(grad_output: torch.Tensor, x: torch.Tensor, act: int,
              slope: float) -> torch.Tensor:
    return launchers.activation_backward(grad_output, x, act, slope)


def _backward_fake(grad_output, x, act, slope):
    return _grad_like(grad_output, x)


def _backward_setup(ctx, inputs, output):
    grad_output, x, ctx.act, ctx.slope = inputs
    ctx.save_for_backward(grad_output, x)


def _backward_backward(ctx, ggx):
    grad_output, x = ctx.saved_tensors
    d_grad = d_x = None
    if ctx.needs_input_grad[0]:
        d_grad = activation_backward(ggx, x, ctx.act, ctx.slope)
    if ctx.needs_input_grad[1]:
        d_x = activation_second_grad(grad_output * ggx, x, ctx.act, ctx.slope)
    return d_grad, d_x, None, None


def _second_grad(grad: torch.Tensor, x: torch.Tensor, act: int, slope: float) -> torch.Tensor:
    return launchers.activation_second_grad(grad, x, act, slope)


activation = LibraryOp("activation", _activation, _activation_fake, setup_context=_save_input,
                       backward=_activation_backward_fn)
activation_backward = LibraryOp("activation_backward", _backward, _backward_fake,
                                setup_context=_backward_setup, backward=_backward_backward)
activation_second_grad = LibraryOp("activation_second_grad", _second_grad, _backward_fake)



class ActivationEager(torch.autograd.Function):
    """cnn::activation of a plain eager call (no tracing, no torch.func, a plain tensor of a
    dtype the kernel takes: the functional checks): the launchers straight, with the fewest
    Python calls around them."""

    @staticmethod
    def forward(ctx, input, act, slope):
        ctx.act, ctx.slope = act, slope
        ctx.save_for_backward(input)
        return launchers.activation_forward(input, act, slope)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        if plain_backward():
            return launchers.activation_backward(grad_output, x, ctx.act, ctx.slope), None, None
        return activation_backward(grad_output, x, ctx.act, ctx.slope), None, None


activation_eager = direct_apply(ActivationEager)

NEGATIVE_SLOPE_IN_PLACE = (
    "In-place leakyReLu backward calculation is triggered with a negative slope which is not "
    "supported. This is caused by calling in-place forward function with a negative slope, "
    "please call out-of-place version instead. File an issue at "
    "https://github.com/pytorch/pytorch if you do require supporting in-place leakRelu "
    "backward calculation with negative slope")
"""torch's error, at backward, for leaky_relu_ with a negative slope (y no longer tells x)."""


@direct_backward
class InplaceActivationFunction(torch.autograd.Function):
    """Eager activation(x, inplace=True): the launcher writes into x, whose history becomes
    this op's. Backward as for cnn::activation, from y where y determines a'(x) (RELU6,
    LEAKY_RELU), else from a copy of x taken before the write (as torch's silu_, hardswish_
    do); a double backward from that copy raises (it is not part of the graph)."""

    @staticmethod
    def forward(ctx, input, act, slope):
        ctx.act, ctx.slope = act, slope
        ctx.from_output = act in _OUTPUT_DETERMINES_GRAD
        ctx.mark_dirty(input)
        saved = input.clone() if not ctx.from_output and ctx.needs_input_grad[0] else None
        out = launchers.activation_forward(input, act, slope, out=input)
        ctx.save_for_backward(out if ctx.from_output else saved)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.act == LEAKY_RELU and ctx.slope < 0:
            raise RuntimeError(NEGATIVE_SLOPE_IN_PLACE)
        if not ctx.from_output and torch.is_grad_enabled():
            raise RuntimeError("cnn: double backward through an in-place silu or hardswish is "
                               "not supported; use inplace=False")
        (saved,) = ctx.saved_tensors
        return activation_backward(grad_output, saved, ctx.act, ctx.slope), None, None


__all__ = ["activation", "activation_backward", "activation_second_grad",
           "InplaceActivationFunction", "ActivationEager", "activation_eager", "ACTIVATIONS",
           "RELU6", "LEAKY_RELU", "SILU", "HARDSWISH", "GELU", "GELU_TANH",
           "NEGATIVE_SLOPE_IN_PLACE"]
