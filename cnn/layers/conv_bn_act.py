"""ConvBNAct2d: Conv2d -> [BatchNorm2d] -> [+ residual] -> [activation] as one module.

A stand-in written with torch.nn.functional (forward only), so that cnn.fuse can be built
against the module's interface; the fused Triton version replaces it.
"""
import torch
from torch import nn
from torch.nn import functional as F

# torch's activation classes this module accepts (cnn's subclasses of them too)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Hardswish, nn.GELU)


def _activate(activation: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(activation, nn.Identity):
        return x
    if isinstance(activation, nn.ReLU):
        return F.relu(x)
    if isinstance(activation, nn.ReLU6):
        return F.relu6(x)
    if isinstance(activation, nn.LeakyReLU):
        return F.leaky_relu(x, activation.negative_slope)
    if isinstance(activation, nn.SiLU):
        return F.silu(x)
    if isinstance(activation, nn.Hardswish):
        return F.hardswish(x)
    return F.gelu(x)


class ConvBNAct2d(nn.Sequential):
    """``ConvBNAct2d(conv, bn=None, activation=None)``: an nn.Sequential of (conv, bn or
    nn.Identity(), activation or nn.Identity()), so state_dict keys are those of
    ``nn.Sequential(conv, bn, act)``. ``forward(input, residual=None)`` returns
    ``act(bn(conv(input)) + residual)``; input (N, C_in, H, W), residual and output
    (N, C_out, OH, OW)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d = None, activation: nn.Module = None):
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"ConvBNAct2d: expected an nn.Conv2d, got {type(conv).__name__}")
        if bn is not None and not isinstance(bn, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            raise TypeError(f"ConvBNAct2d: expected an nn.BatchNorm2d, got {type(bn).__name__}")
        if bn is not None and bn.num_features != conv.out_channels:
            raise ValueError(
                f"ConvBNAct2d: the batch norm has {bn.num_features} features but the conv "
                f"has {conv.out_channels} output channels")
        if activation is not None and not isinstance(activation, (nn.Identity, *ACTIVATIONS)) \
                or isinstance(activation, nn.GELU) and activation.approximate != "none":
            raise TypeError(f"ConvBNAct2d: unsupported activation {activation!r}")
        super().__init__(conv, bn if bn is not None else nn.Identity(),
                         activation if activation is not None else nn.Identity())

    def forward(self, input: torch.Tensor, residual: torch.Tensor = None) -> torch.Tensor:
        conv, bn, activation = self
        padding = conv.padding
        if conv.padding_mode != "zeros":
            input = F.pad(input, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
            padding = 0
        out = F.conv2d(input, conv.weight, conv.bias, conv.stride, padding, conv.dilation,
                       conv.groups)
        if isinstance(bn, nn.SyncBatchNorm):
            out = nn.SyncBatchNorm.forward(bn, out)
        elif not isinstance(bn, nn.Identity):
            out = nn.BatchNorm2d.forward(bn, out)
        if residual is not None:
            out = out + residual
        return _activate(activation, out)


__all__ = ["ConvBNAct2d"]
