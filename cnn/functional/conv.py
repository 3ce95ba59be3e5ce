"""conv2d as an autograd.Function over the Triton kernels, shaped like torch.nn.functional."""
import torch

from kernels import Conv2dGeometry, conv2d_forward, conv2d_input_grad, conv2d_weight_grad
from kernels.runtime import check_device

from .compile import run_as_is_under_compile
from .conv_args import check_conv2d_args, check_conv2d_types


def autocast_to_lower_precision(*tensors):
    """Inside ``torch.autocast``, convolution runs in the autocast dtype, as torch's does."""
    first = tensors[0]
    if not torch.is_autocast_enabled(first.device.type):
        return tensors
    dtype = torch.get_autocast_dtype(first.device.type)
    return tuple(t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors)


class Conv2dFunction(torch.autograd.Function):
    """y = conv2d(x, w) + b; backward: dx = conv_transpose(dy, w), dw = dy (*) x, db = sum dy."""

    @staticmethod
    def forward(ctx, input, weight, bias, geometry: Conv2dGeometry):
        ctx.geometry = geometry
        ctx.save_for_backward(input, weight)
        ctx.has_bias = bias is not None
        return conv2d_forward(input, weight, bias, geometry)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        need_input, need_weight, need_bias, _ = ctx.needs_input_grad
        grad_input = grad_weight = grad_bias = None
        if need_input:
            grad_input = conv2d_input_grad(grad_output, weight, input, ctx.geometry)
        if need_weight or (need_bias and ctx.has_bias):
            grad_weight, grad_bias = conv2d_weight_grad(
                grad_output, input, weight, ctx.geometry, need_bias=ctx.has_bias and need_bias)
        return grad_input, grad_weight if need_weight else None, grad_bias, None


@run_as_is_under_compile
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Drop-in for ``torch.nn.functional.conv2d``, running the Triton kernels.

    input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_out, C_in/groups, KH, KW);
    bias: (C_out,) or None. padding: int, pair, 'same' or 'valid'.
    Returns (N, C_out, OH, OW) (or (C_out, OH, OW)) in the input's memory format.
    """
    check_conv2d_types(input, weight, bias, stride, padding, dilation, groups)
    input, weight, bias = autocast_to_lower_precision(input, weight, bias)
    unbatched = input.dim() == 3
    batched = input.unsqueeze(0) if unbatched else input
    stride, padding4, dilation = check_conv2d_args(batched, weight, bias, stride, padding,
                                                   dilation, groups)
    check_device(batched, weight, bias)
    geometry = Conv2dGeometry.from_shapes(batched.shape, weight.shape, stride, padding4,
                                          dilation, groups)
    out = Conv2dFunction.apply(batched, weight, bias, geometry)
    return out.squeeze(0) if unbatched else out
