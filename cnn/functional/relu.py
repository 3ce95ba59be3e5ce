"""relu shaped like torch.nn.functional: input checked here, then ``torch.ops.cnn.relu``
(cnn/ops/relu.py)."""
import torch

from ..kernels.runtime import check_device
from ..ops import relu as ops
from ..ops.registry import is_traced, tracing


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


def relu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.relu``: any shape and strides, float or integer
    dtypes; the result is laid out like input (inplace=True: input itself, modified)."""
    if type(input) is torch.Tensor and not inplace and not tracing() \
            and input.dtype != torch.bool and not input.is_complex():
        # A plain eager call that passes the checks below: straight to the launchers'
        # autograd Function (LibraryOp's dispatch would ask again whether anything traces it).
        check_device(input)
        return ops.relu_eager(input)
    if not isinstance(input, torch.Tensor):
        raise TypeError(
            f"relu(): argument 'input' (position 1) must be Tensor, not {type(input).__name__}")
    if input.dtype == torch.bool:
        raise RuntimeError("Boolean inputs not supported for relu")
    if input.is_complex():
        raise NotImplementedError("clamp is not supported for complex types")
    traced = is_traced((input,))
    if inplace and not traced:
        # Eager only: a traced in-place relu is functionalized, and autograd's own checks apply.
        check_inplace(input)
    check_device(input)
    if not inplace:
        return ops.relu(input)
    if traced:
        # A custom op may not return its input: compute, then copy back (functionalized).
        return input.copy_(ops.relu(input))
    return ops.InplaceReLUFunction.apply(input)


__all__ = ["relu"]
