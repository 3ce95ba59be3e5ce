"""Batch norm, and the fused conv + batch norm + ReLU, whose statistics span the processes of a
process group (synced batch norm): arguments checked here, then the autograd Functions of
cnn/ops/sync_batch_norm.py (which says how the statistics and gradients are shared).
"""
import torch.distributed as dist

from ..kernels.conv2d.geometry import Conv2dGeometry
from ..kernels.runtime import check_device
from ..ops import sync_batch_norm as ops
from .batch_norm import check_batch_norm_args, flat_param
from .conv2d import autocast_to_lower_precision
from .conv2d_args import check_conv2d_args


def sync_batch_norm(input, running_mean, running_var, weight=None, bias=None, momentum=0.1,
                    eps=1e-5, process_group=None, world_size=None, num_batches_tracked=None):
    """Training-mode batch norm with the statistics of every process in ``process_group``
    (default: the world), on the Triton kernels; any backend whose collectives take the
    input's device (gloo on CPU, nccl on CUDA).

    input: (N, C, ...) on each process (N may differ, 0 included); running_mean,
    running_var, weight, bias: (C,) or None; running statistics are updated in place with
    the global mean and unbiased variance. Returns a tensor shaped like input.
    """
    if world_size is None:
        world_size = dist.get_world_size(process_group)
    # torch's rule (more than one value per channel), on the global batch.
    shape = (input.shape[0] * world_size, *input.shape[1:]) if input.dim() else input.shape
    check_batch_norm_args(shape, input.dtype, input.device, running_mean, running_var, weight,
                          bias, True, eps=eps, momentum=momentum,
                          num_batches_tracked=num_batches_tracked)
    if running_mean is not None and momentum is None and num_batches_tracked is None:
        raise TypeError("batch_norm(): argument 'momentum' must be float, not NoneType")
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and not (t.dim() == 1 and t.stride(0) == 1):
            raise ValueError(f"sync_batch_norm: {name} must be a 1-D tensor with unit stride")
    check_device(input, running_mean, running_var, weight, bias)
    return ops.SyncBatchNormFunction.apply(input, flat_param(weight), flat_param(bias),
                                           running_mean, running_var, num_batches_tracked,
                                           momentum, eps, process_group, world_size)


def sync_conv_bn_relu2d(input, weight, bias, running_mean, running_var, bn_weight, bn_bias,
                        stride=1, padding=0, dilation=1, groups=1, momentum=0.1, eps=1e-5,
                        process_group=None, world_size=None, num_batches_tracked=None):
    """``cnn.functional.conv_bn_relu2d`` in training mode with the batch statistics of every
    process in ``process_group`` (default: the world).

    input: (N, C_in, H, W) on each process (N may differ); weight: (C_out, C_in/groups, KH,
    KW); bias, running_mean, running_var, bn_weight, bn_bias: (C_out,) or None. Returns
    (N, C_out, OH, OW) in the input's layout.
    """
    if input.dim() != 4:
        raise ValueError(f"expected 4D input (got {input.dim()}D input)")
    if world_size is None:
        world_size = dist.get_world_size(process_group)
    input, weight, bias = autocast_to_lower_precision(input, weight, bias)
    stride, padding4, dilation = check_conv2d_args(input, weight, bias, stride, padding,
                                                   dilation, groups)
    geometry = Conv2dGeometry.from_shapes(input.shape, weight.shape, stride, padding4,
                                          dilation, groups)
    n, *rest = geometry.output_shape
    check_batch_norm_args((n * world_size, *rest), input.dtype, input.device, running_mean,
                          running_var, bn_weight, bn_bias, True, eps=eps, momentum=momentum,
                          num_batches_tracked=num_batches_tracked)
    if (bn_weight is None) != (bn_bias is None):
        raise ValueError("sync_conv_bn_relu2d: bn_weight and bn_bias must both be given or "
                         "both be None (an affine batch norm or not)")
    if running_mean is not None and momentum is None and num_batches_tracked is None:
        raise TypeError("batch_norm(): argument 'momentum' must be float, not NoneType")
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("bn_weight", bn_weight), ("bn_bias", bn_bias)):
        if t is not None and not (t.dim() == 1 and t.stride(0) == 1):
            raise ValueError(f"sync_conv_bn_relu2d: {name} must be a 1-D tensor with unit "
                             "stride")
    check_device(input, weight, bias, running_mean, running_var, bn_weight, bn_bias)
    return ops.SyncConvBNReLUFunction.apply(input, weight, bias, bn_weight, bn_bias,
                                            running_mean, running_var, num_batches_tracked,
                                            geometry, momentum, eps, process_group, world_size)


__all__ = ["sync_batch_norm", "sync_conv_bn_relu2d"]
