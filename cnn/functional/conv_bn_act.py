"""Fused conv2d + batch norm + activation (+ residual), and conv2d + activation (+ residual):
arguments checked here, then ``torch.ops.cnn.conv_bn_act2d_train`` (with
``batch_norm_update_stats`` where there are running statistics or a counter to update) /
``conv_bn_act2d_eval`` / ``conv_act2d`` (cnn/ops/conv_bn_act.py)."""
import torch
import torch.nn.functional as F

from ..kernels.activation_math import NONE, activation_code
from ..kernels.conv2d.geometry import Conv2dGeometry
from ..kernels.runtime import check_device
from ..ops import conv_bn_act as ops
from .batch_norm import check_batch_norm_args, empty_batch_norm
from .conv2d import autocast_to_lower_precision, conv2d
from .conv2d_args import check_conv2d_args, check_conv2d_types

# torch's own activations, for results that need no kernel (an empty output).
TORCH_ACTIVATIONS = {
    "none": lambda t, slope: t,
    "relu": lambda t, slope: F.relu(t),
    "relu6": lambda t, slope: F.relu6(t),
    "leaky_relu": lambda t, slope: F.leaky_relu(t, slope),
    "silu": lambda t, slope: F.silu(t),
    "hardswish": lambda t, slope: F.hardswish(t),
    "gelu": lambda t, slope: F.gelu(t),
    "gelu_tanh": lambda t, slope: F.gelu(t, approximate="tanh"),
}


def check_residual(residual, output_shape, dtype, name: str):
    """The residual of a fused op: a tensor of the output's shape and dtype. Shapes that differ
    get torch's broadcast error type (RuntimeError); broadcasting is not supported."""
    if residual is None:
        return
    if not isinstance(residual, torch.Tensor):
        raise TypeError(f"{name}(): argument 'residual' must be Tensor, not "
                        f"{type(residual).__name__}")
    if tuple(residual.shape) != tuple(output_shape):
        raise RuntimeError(f"{name}(): the residual's shape {tuple(residual.shape)} must be the "
                           f"output's {tuple(output_shape)} (no broadcasting)")
    if residual.dtype != dtype:
        raise RuntimeError(f"{name}(): the residual's dtype {residual.dtype} must be the "
                           f"output's {dtype}")


def conv_bn_act2d(input, weight, bias=None, running_mean=None, running_var=None,
                  bn_weight=None, bn_bias=None, stride=1, padding=0, dilation=1, groups=1,
                  training=False, momentum=0.1, eps=1e-5, num_batches_tracked=None,
                  activation="relu", negative_slope=0.01, residual=None):
    """act(batch_norm(conv2d(input, weight, bias, stride, padding, dilation, groups),
    running_mean, running_var, bn_weight, bn_bias, training, momentum, eps) + residual) in one
    fused op.

    input: (N, C_in, H, W), NCHW or channels_last; weight: (C_out, C_in/groups, KH, KW);
    bias, running_mean, running_var, bn_weight, bn_bias: (C_out,) or None.
    training: batch statistics (running stats, when given, updated in place); otherwise the
    running statistics, folded into the convolution. num_batches_tracked: a 0-dim int64
    counter advanced by one in training (momentum None: cumulative average over it).
    activation: "none", "relu", "relu6", "leaky_relu" (with negative_slope), "silu",
    "hardswish" or "gelu" (torch.nn.functional's, exact GELU). residual: None or
    (N, C_out, OH, OW), any layout, the output's dtype; added after the batch norm.
    Returns (N, C_out, OH, OW) in conv2d's layout (channels_last when input or weight is).
    """
    act = activation_code(activation)
    check_conv2d_types(input, weight, bias, stride, padding, dilation, groups)
    if input.dim() != 4:
        raise ValueError(f"expected 4D input (got {input.dim()}D input)")
    # Inside torch.autocast the convolution runs in the autocast dtype, as torch's does; the
    # batch norm then meets that dtype with its float32 parameters (torch's mixed precision).
    input, weight, bias, residual = autocast_to_lower_precision(input, weight, bias, residual)
    stride, padding4, dilation = check_conv2d_args(input, weight, bias, stride, padding,
                                                   dilation, groups)
    geometry = Conv2dGeometry.from_shapes(input.shape, weight.shape, stride, padding4,
                                          dilation, groups)
    check_residual(residual, geometry.output_shape, input.dtype, "conv_bn_act2d")
    if not check_batch_norm_args(geometry.output_shape, input.dtype, input.device,
                                 running_mean, running_var, bn_weight, bn_bias, training,
                                 eps=eps):
        # An empty output: torch's batch norm returns it scaled and shifted by the first
        # weight and bias, whatever their sizes, with no statistics (no launch needed).
        y = conv2d(input, weight, bias, stride, padding, dilation, groups)
        counter = num_batches_tracked if training else None
        y = empty_batch_norm(y, bn_weight, bn_bias, counter)
        return TORCH_ACTIVATIONS[activation](y if residual is None else y + residual,
                                             negative_slope)
    if (bn_weight is None) != (bn_bias is None):
        raise ValueError("conv_bn_act2d: bn_weight and bn_bias must both be given or both be "
                         "None (an affine batch norm or not)")
    update = training and running_mean is not None
    if update and momentum is None and num_batches_tracked is None:
        raise TypeError("batch_norm(): argument 'momentum' must be float, not NoneType")
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("bn_weight", bn_weight), ("bn_bias", bn_bias)):
        if t is not None and not (t.dim() == 1 and t.stride(0) == 1):
            raise ValueError(f"conv_bn_act2d: {name} must be a 1-D tensor with unit stride")
    check_device(input, weight, bias, running_mean, running_var, bn_weight, bn_bias, residual)
    args = (list(stride), list(padding4), list(dilation), groups)
    act_args = (activation, float(negative_slope) if act != NONE else 0.0)
    if not training:
        return ops.conv_bn_act2d_eval(input, weight, bias, bn_weight, bn_bias, running_mean,
                                      running_var, residual, *args, float(eps), *act_args)
    op_args = (input, weight, bias, bn_weight, bn_bias, residual, *args, float(eps), *act_args)
    if not update and num_batches_tracked is None:
        return ops.conv_bn_act2d_train(*op_args)[0]
    # The running stats (when updated) and the counter change in place after the op.
    state = (running_mean, running_var) if update else (None, None)
    return ops.conv_bn_act2d_train_and_update(
        *op_args, *state, num_batches_tracked, None if momentum is None else float(momentum))[0]


def conv_bn_relu2d(input, weight, bias=None, running_mean=None, running_var=None,
                   bn_weight=None, bn_bias=None, stride=1, padding=0, dilation=1, groups=1,
                   training=False, momentum=0.1, eps=1e-5, num_batches_tracked=None):
    """relu(batch_norm(conv2d(...))): ``conv_bn_act2d`` with activation "relu", no residual."""
    return conv_bn_act2d(input, weight, bias, running_mean, running_var, bn_weight, bn_bias,
                         stride, padding, dilation, groups, training, momentum, eps,
                         num_batches_tracked)


def conv_act2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
               activation="relu", negative_slope=0.01, residual=None):
    """act(conv2d(input, weight, bias, stride, padding, dilation, groups) + residual) in one
    launch (and, with a gradient to come, the pre-activation value kept from the same launch).

    input: (N, C_in, H, W) or unbatched (C_in, H, W), NCHW or channels_last; weight:
    (C_out, C_in/groups, KH, KW); bias: (C_out,) or None; padding: int, pair, 'same' or
    'valid'. activation, negative_slope: as ``conv_bn_act2d``. residual: None or a tensor of
    the output's shape and dtype, any layout. Returns (N, C_out, OH, OW) (or (C_out, OH, OW))
    in conv2d's layout.
    """
    act = activation_code(activation)
    check_conv2d_types(input, weight, bias, stride, padding, dilation, groups)
    input, weight, bias, residual = autocast_to_lower_precision(input, weight, bias, residual)
    unbatched = input.dim() == 3
    batched = input.unsqueeze(0) if unbatched else input
    stride, padding4, dilation = check_conv2d_args(batched, weight, bias, stride, padding,
                                                   dilation, groups)
    geometry = Conv2dGeometry.from_shapes(batched.shape, weight.shape, stride, padding4,
                                          dilation, groups)
    out_shape = geometry.output_shape[1:] if unbatched else geometry.output_shape
    check_residual(residual, out_shape, input.dtype, "conv_act2d")
    if unbatched and residual is not None:
        residual = residual.unsqueeze(0)
    check_device(batched, weight, bias, residual)
    # The pre-activation value is kept only for a backward through the activation.
    keep_pre = act != NONE and torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, weight, bias, residual))
    z, _ = ops.conv_act2d(batched, weight, bias, residual, list(stride), list(padding4),
                          list(dilation), groups, activation,
                          float(negative_slope) if act != NONE else 0.0, keep_pre)
    return z.squeeze(0) if unbatched else z


__all__ = ["conv_bn_act2d", "conv_bn_relu2d", "conv_act2d", "check_residual"]
