"""Fused conv2d + batch norm + ReLU: arguments checked here, then
``torch.ops.cnn.conv_bn_act2d_train`` / ``conv_bn_act2d_eval`` (cnn/ops/conv_bn_act.py)."""
import torch

from ..kernels.conv2d.geometry import Conv2dGeometry
from ..kernels.runtime import check_device
from ..ops import conv_bn_act as ops
from .batch_norm import check_batch_norm_args, empty_batch_norm
from .conv2d import autocast_to_lower_precision, conv2d
from .conv2d_args import check_conv2d_args, check_conv2d_types


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
    Returns (N, C_out, OH, OW) in conv2d's layout (channels_last when input or weight is).
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
    if not check_batch_norm_args(geometry.output_shape, input.dtype, input.device,
                                 running_mean, running_var, bn_weight, bn_bias, training,
                                 eps=eps):
        # An empty output: torch's batch norm returns it scaled and shifted by the first
        # weight and bias, whatever their sizes, with no statistics (no launch needed).
        y = conv2d(input, weight, bias, stride, padding, dilation, groups)
        counter = num_batches_tracked if training else None
        return torch.relu(empty_batch_norm(y, bn_weight, bn_bias, counter))
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
    args = (list(stride), list(padding4), list(dilation), groups)
    if not training:
        return ops.conv_bn_act2d_eval(input, weight, bias, bn_weight, bn_bias, running_mean,
                                       running_var, *args, float(eps))
    z, _, _, _ = ops.conv_bn_act2d_train(input, weight, bias, bn_weight, bn_bias, running_mean,
                                          running_var, num_batches_tracked, *args,
                                          None if momentum is None else float(momentum),
                                          float(eps))
    return z


__all__ = ["conv_bn_relu2d"]
