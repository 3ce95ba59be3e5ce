"""relu as an autograd.Function over the Triton kernel, shaped like torch.nn.functional."""
import torch
from torch.autograd.function import once_differentiable

from kernels.relu import relu_backward, relu_forward
from kernels.runtime import check_device

from .compile import run_as_is_under_compile


class ReLUFunction(torch.autograd.Function):
    """y = max(x, 0) (NaN and -0.0 pass through, as torch's relu); backward
    dx = dy * (y > 0), from the saved output (as torch's threshold_backward)."""

    @staticmethod
    def forward(ctx, input, inplace: bool):
        if inplace:
            ctx.mark_dirty(input)
            out = relu_forward(input, out=input)
        else:
            out = relu_forward(input)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (output,) = ctx.saved_tensors
        grad_input = relu_backward(grad_output, output) if ctx.needs_input_grad[0] else None
        return grad_input, None


@run_as_is_under_compile
def relu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.relu``: any shape and strides, float or integer
    dtypes; the result is laid out like input (inplace=True: input itself, modified)."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(
            f"relu(): argument 'input' (position 1) must be Tensor, not {type(input).__name__}")
    if input.dtype == torch.bool:
        raise RuntimeError("Boolean inputs not supported for relu")
    if input.is_complex():
        raise NotImplementedError("clamp is not supported for complex types")
    check_device(input)
    return ReLUFunction.apply(input, inplace)


__all__ = ["relu", "ReLUFunction"]
