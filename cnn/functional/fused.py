"""Fused conv2d + batch norm + ReLU as one autograd.Function (kernels/conv_bn_relu.py)."""
import torch
from torch.autograd.function import once_differentiable

from kernels.batch_norm_forward import stats_dtype
from kernels.conv2d_geometry import Conv2dGeometry
from kernels.conv_bn_relu import (
    conv_bn_relu_backward,
    conv_bn_relu_eval_forward,
    conv_bn_relu_train_forward,
)
from kernels.runtime import check_device

from .batch_norm import check_batch_norm_args
from .compile import run_as_is_under_compile
from .conv import autocast_to_lower_precision
from .conv_args import check_conv2d_args, check_conv2d_types


class ConvBNReLUFunction(torch.autograd.Function):
    """z = relu(batch_norm(conv2d(x, w) + b)); training uses and updates batch statistics,
    evaluation folds the running statistics into the convolution (one launch).

    Backward (math in kernels/conv_bn_relu.py): ReLU mask and the batch-norm reductions give
    dgamma, dbeta and dy (the conv output's gradient); then the conv backward kernels give
    dx, dw and db.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, bn_weight, bn_bias, running_mean, running_var,
                num_batches_tracked, geometry: Conv2dGeometry, training: bool, momentum,
                eps: float):
        ctx.geometry, ctx.training, ctx.eps = geometry, training, eps
        if not training:
            z = conv_bn_relu_eval_forward(input, weight, bias, geometry, bn_weight, bn_bias,
                                          running_mean, running_var, eps)
            # No activation kept: the backward recomputes the conv output, so z may be
            # modified in place afterwards (a following nn.ReLU(inplace=True) does).
            ctx.save_for_backward(input, weight, bias, bn_weight, bn_bias, None, running_mean,
                                  running_var)
            return z
        n, c, oh, ow = geometry.output_shape
        if n * oh * ow == 0:
            # Empty batch: no statistics, running stats left as they are (torch's behaviour).
            z = torch.empty(geometry.output_shape, device=input.device, dtype=input.dtype)
            mean = torch.empty((c,), device=input.device, dtype=stats_dtype(input.dtype))
            if num_batches_tracked is not None:
                num_batches_tracked.add_(1)
            ctx.save_for_backward(input, weight, bias, bn_weight, bn_bias, z, mean, mean)
            return z
        z, y, mean, invstd = conv_bn_relu_train_forward(
            input, weight, bias, geometry, bn_weight, bn_bias, running_mean, running_var,
            num_batches_tracked, momentum, eps)
        ctx.save_for_backward(input, weight, bias, bn_weight, bn_bias, y, mean, invstd)
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, weight, bias, bn_weight, bn_bias, saved, mean, scale = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:5])
        if not any(needs):
            return (None,) * 12
        grads = conv_bn_relu_backward(grad_output, input, weight, bias, ctx.geometry, bn_weight,
                                      bn_bias, mean, scale, eps=ctx.eps, training=ctx.training,
                                      y=saved, needs=needs)
        return (*grads, None, None, None, None, None, None, None)


@run_as_is_under_compile
def conv_bn_relu2d(input, weight, bias=None, running_mean=None, running_var=None,
                   bn_weight=None, bn_bias=None, stride=1, padding=0, dilation=1, groups=1,
                   training=False, momentum=0.1, eps=1e-5, num_batches_tracked=None):
    """relu(batch_norm(conv2d(input, weight, bias, stride, padding, dilation, groups),
    running_mean, running_var, bn_weight, bn_bias, training, momentum, eps)) in one fused op.

    input: (N, C_in, H, W), NCHW or channels_last; weight: (C_out, C_in/groups, KH, KW);
    bias, running_mean, running_var, bn_weight, bn_bias: (C_out,) or None.
    training: batch statistics (running stats, when given, updated in place); otherwise the
    running statistics, folded into the convolution. num_batches_tracked: a 0-dim int64
    counter advanced by one in training (momentum None: cumulative average over it).
    Returns (N, C_out, OH, OW) in the input's layout.
    """
    check_conv2d_types(input, weight, bias, stride, padding, dilation, groups)
    if input.dim() != 4:
        raise ValueError(f"expected 4D input (got {input.dim()}D input)")
    # Inside torch.autocast the convolution runs in the autocast dtype, as torch's does; the
    # batch norm then meets that dtype with its float32 parameters (torch's mixed precision).
    input, weight, bias = autocast_to_lower_precision(input, weight, bias)
    stride, padding4, dilation = check_conv2d_args(input, weight, bias, stride, padding,
                                                   dilation, groups)
    geometry = Conv2dGeometry.from_shapes(input.shape, weight.shape, stride, padding4,
                                          dilation, groups)
    check_batch_norm_args(geometry.output_shape, input.dtype, input.device, running_mean,
                          running_var, bn_weight, bn_bias, training, eps=eps)
    if (bn_weight is None) != (bn_bias is None):
        raise ValueError("conv_bn_relu2d: bn_weight and bn_bias must both be given or both be "
                         "None (an affine batch norm or not)")
    update = training and running_mean is not None
    if update and momentum is None and num_batches_tracked is None:
        raise TypeError("batch_norm(): argument 'momentum' must be float, not NoneType")
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("bn_weight", bn_weight), ("bn_bias", bn_bias)):
        if t is not None and not (t.dim() == 1 and t.stride(0) == 1):
            raise ValueError(f"conv_bn_relu2d: {name} must be a 1-D tensor with unit stride")
    check_device(input, weight, bias, running_mean, running_var, bn_weight, bn_bias)
    return ConvBNReLUFunction.apply(input, weight, bias, bn_weight, bn_bias, running_mean,
                                    running_var, num_batches_tracked, geometry, training,
                                    momentum, eps)


__all__ = ["conv_bn_relu2d", "ConvBNReLUFunction"]
