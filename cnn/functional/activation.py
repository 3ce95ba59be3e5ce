"""relu shaped like torch.nn.functional: input checked here, then ``torch.ops.cnn.relu``
(cnn/ops/relu.py)."""
import torch

from kernels.relu import relu_forward
from kernels.runtime import check_device

from ..ops import relu as ops
from ..ops.registry import is_traced


def relu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.relu``: any shape and strides, float or integer
    dtypes; the result is laid out like input (inplace=True: input itself, modified)."""
    if input.dtype == torch.bool:
        raise RuntimeError("Boolean inputs not supported for relu")
    if input.is_complex():
        raise NotImplementedError("clamp is not supported for complex types")
    check_device(input)
    if not inplace:
        return ops.relu(input)
    if is_traced((input,)):
        # A custom op may not return its input: compute, then copy back (functionalized).
        return input.copy_(ops.relu(input))
    return InplaceReLUFunction.apply(input)


class InplaceReLUFunction(torch.autograd.Function):
    """Eager relu(x, inplace=True): the launcher writes into x, whose history becomes this
    op's; backward dx = relu_backward(dy, y) as for cnn::relu."""

    @staticmethod
    def forward(ctx, input):
        ctx.mark_dirty(input)
        out = relu_forward(input, out=input)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (output,) = ctx.saved_tensors
        return ops.relu_backward(grad_output, output)


__all__ = ["relu"]
