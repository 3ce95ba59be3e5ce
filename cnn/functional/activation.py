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


def check_inplace(input: torch.Tensor) -> None:
    """What torch refuses before an in-place op writes (autograd would refuse ours only after
    the kernel ran): a leaf that requires grad, a view of one, and internal overlap."""
    if input.requires_grad and torch.is_grad_enabled():
        if input._is_view() and input._base.is_leaf:
            raise RuntimeError("a view of a leaf Variable that requires grad is being used in "
                               "an in-place operation.")
        if input.is_leaf:
            raise RuntimeError("a leaf Variable that requires grad is being used in an "
                               "in-place operation.")
    shape_strides = zip(input.shape, input.stride(), strict=True)
    if input.numel() and any(stride == 0 and size > 1 for size, stride in shape_strides):
        raise RuntimeError("unsupported operation: more than one element of the written-to "
                           "tensor refers to a single memory location. Please clone() the "
                           "tensor before performing the operation.")


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
    if inplace:
        check_inplace(input)
    check_device(input)
    return ReLUFunction.apply(input, inplace)


__all__ = ["relu", "ReLUFunction"]
