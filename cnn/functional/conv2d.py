"""conv2d shaped like torch.nn.functional: arguments checked here, then ``torch.ops.cnn.conv2d``
(cnn/ops/conv2d.py), which runs the Triton kernels."""
import torch

from ..kernels.runtime import check_device
from ..ops import conv2d as ops
from .conv2d_args import check_conv2d_args, check_conv2d_types


def autocast_to_lower_precision(*tensors):
    """Inside ``torch.autocast``, convolution runs in the autocast dtype, as torch's does."""
    first = tensors[0]
    if not torch.is_autocast_enabled(first.device.type):
        return tensors
    dtype = torch.get_autocast_dtype(first.device.type)
    return tuple(t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors)


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
    out = ops.conv2d(batched, weight, bias, list(stride), list(padding4), list(dilation),
                     groups)
    return out.squeeze(0) if unbatched else out
