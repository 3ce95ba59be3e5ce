"""ReLU as ``torch.ops.cnn`` ops over the launchers in cnn.kernels.relu.

    cnn::relu(x) -> y                      any shape; y laid out like x
    cnn::relu_backward(dy, y) -> dx        dx = dy where y > 0, else 0

relu_backward is linear in dy with a mask that is constant almost everywhere, so
d(dx)/d(dy) = relu_backward(ggx, y) and d(dx)/dy = 0 (torch's threshold_backward rule).
A custom op may not return an alias of its input, so in-place ReLU is no op: in eager mode
it is InplaceReLUFunction (the launcher's in-place form), under tracing cnn::relu copied back
(cnn.functional.relu picks which).
"""
import torch

from ..kernels import relu as launchers
from ..kernels.relu import MAX_DIMS, is_dense
from .registry import LibraryOp, direct_apply, direct_backward, plain_backward


def _out_like(x: torch.Tensor) -> torch.Tensor:
    """The launcher's output layout: x's own when x is dense or of at most 4 dims, else
    contiguous."""
    if x.dim() > MAX_DIMS and not is_dense(x):
        return x.new_empty(x.shape)
    return torch.empty_like(x)


def _relu(input: torch.Tensor) -> torch.Tensor:
    return launchers.relu_forward(input)


def _relu_fake(input):
    return _out_like(input)


def _relu_setup(ctx, inputs, output):
    ctx.save_for_backward(output)


def _relu_backward_fn(ctx, grad_output):
    (output,) = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None
    if plain_backward():
        return launchers.relu_backward(grad_output, output)  # all a plain backward needs
    return relu_backward(grad_output, output)  # differentiated itself, or traced


def _backward(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return launchers.relu_backward(grad_output, output)


def _backward_fake(grad_output, output):
    if output.dim() > MAX_DIMS and grad_output.stride() != output.stride():
        return output.new_empty(output.shape)
    return torch.empty_like(output)


def _backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _backward_backward(ctx, ggx):
    (output,) = ctx.saved_tensors
    return relu_backward(ggx, output) if ctx.needs_input_grad[0] else None, None


relu = LibraryOp("relu", _relu, _relu_fake, setup_context=_relu_setup,
                 backward=_relu_backward_fn)
relu_backward = LibraryOp("relu_backward", _backward, _backward_fake,
                          setup_context=_backward_setup, backward=_backward_backward)


class ReLUEager(torch.autograd.Function):
    """cnn::relu of a plain eager call (no tracing, no torch.func, a plain tensor: the
    functional checks): the launchers straight, with the fewest Python calls around them."""

    @staticmethod
    def forward(ctx, input):
        out = launchers.relu_forward(input)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (output,) = ctx.saved_tensors
        if plain_backward():
            return launchers.relu_backward(grad_output, output)
        return relu_backward(grad_output, output)


relu_eager = direct_apply(ReLUEager)


@direct_backward
class InplaceReLUFunction(ReLUEager):
    """Eager relu(x, inplace=True): the launcher writes into x, whose history becomes this
    op's; ReLUEager's backward, dx = relu_backward(dy, y) as for cnn::relu."""

    @staticmethod
    def forward(ctx, input):
        ctx.mark_dirty(input)
        out = launchers.relu_forward(input, out=input)
        ctx.save_for_backward(out)
        return out


__all__ = ["relu", "relu_backward", "InplaceReLUFunction", "ReLUEager", "relu_eager"]
