"""ConvBNReLU2d: Conv2d -> BatchNorm2d -> ReLU as one fused module."""
import torch
from torch import nn

from ..functional.conv_bn_act import conv_bn_relu2d
from ..functional.sync_batch_norm import sync_conv_bn_relu2d
from .batch_norm import batch_norm_mode
from .relu import ReLU
from .sync_batch_norm import sync_group


class ConvBNReLU2d(nn.Sequential):
    """Conv2d, BatchNorm2d and ReLU fused, built from existing modules as
    ``torch.ao.nn.intrinsic.ConvBnReLU2d(conv, bn, relu)`` is: ``ConvBNReLU2d(conv, bn)`` or
    ``ConvBNReLU2d(conv, bn, relu)``. torch's or cnn's modules both do.

    An nn.Sequential of the three, so parameters, buffers and state_dict keys ("0.weight",
    "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
    "1.num_batches_tracked") are those of ``nn.Sequential(conv, bn, relu)`` and load both
    ways; only forward differs. The batch norm's own ``training`` flag picks the mode, as
    in the unfused sequence:
      training    conv with a statistics epilogue, finalize, normalize + ReLU (3 launches);
                  running stats and num_batches_tracked updated as torch.nn.BatchNorm2d does
      evaluation  batch norm folded into the conv epilogue with ReLU (1 launch)
    Input (N, C_in, H, W), NCHW or channels_last -> (N, C_out, OH, OW) in the same layout.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, relu: nn.ReLU = None):
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"ConvBNReLU2d: expected an nn.Conv2d, got {type(conv).__name__}")
        if not isinstance(bn, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            raise TypeError(
                f"ConvBNReLU2d: expected an nn.BatchNorm2d, got {type(bn).__name__}")
        if relu is not None and not isinstance(relu, nn.ReLU):
            raise TypeError(f"ConvBNReLU2d: expected an nn.ReLU, got {type(relu).__name__}")
        if bn.num_features != conv.out_channels:
            raise ValueError(
                f"ConvBNReLU2d: the batch norm has {bn.num_features} features but the conv "
                f"has {conv.out_channels} output channels")
        super().__init__(conv, bn, relu if relu is not None else ReLU())

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        conv, bn = self[0], self[1]
        padding = conv.padding
        if conv.padding_mode != "zeros":
            input = nn.functional.pad(input, conv._reversed_padding_repeated_twice,
                                      mode=conv.padding_mode)
            padding = 0
        batch_stats, running_mean, running_var, momentum, counter = batch_norm_mode(bn)
        group = sync_group(bn)  # a cnn.SyncBatchNorm training inside a process group
        if group is not None:
            return sync_conv_bn_relu2d(input, conv.weight, conv.bias, running_mean, running_var,
                                       bn.weight, bn.bias, conv.stride, padding, conv.dilation,
                                       conv.groups, momentum, bn.eps, *group,
                                       num_batches_tracked=counter)
        return conv_bn_relu2d(input, conv.weight, conv.bias, running_mean, running_var,
                              bn.weight, bn.bias, conv.stride, padding, conv.dilation,
                              conv.groups, training=batch_stats, momentum=momentum, eps=bn.eps,
                              num_batches_tracked=counter)


__all__ = ["ConvBNReLU2d"]
