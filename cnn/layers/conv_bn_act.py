"""ConvBNAct2d: Conv2d -> BatchNorm2d (optional) -> activation (optional), with an optional
residual added before the activation, as one fused module; ConvBNReLU2d, its ReLU case."""
import torch
from torch import nn

from ..functional import activation as activations
from ..functional.conv2d import conv2d
from ..functional.conv_bn_act import conv_act2d, conv_bn_act2d
from ..functional.relu import relu
from ..functional.sync_batch_norm import sync_batch_norm, sync_conv_bn_relu2d
from .batch_norm import batch_norm_mode
from .relu import ReLU
from .sync_batch_norm import sync_group

# The activation modules we fuse, most specific first, with cnn.functional's activation name.
_ACTIVATION_MODULES = ((nn.ReLU6, "relu6"), (nn.ReLU, "relu"), (nn.LeakyReLU, "leaky_relu"),
                       (nn.SiLU, "silu"), (nn.Hardswish, "hardswish"), (nn.GELU, "gelu"),
                       (nn.Identity, "none"))


# cnn.functional's activation for each name, for the unfused (synced batch norm) sequence.
_UNFUSED_ACTIVATIONS = {
    "none": lambda z, slope: z, "relu": lambda z, slope: relu(z),
    "relu6": lambda z, slope: activations.relu6(z),
    "leaky_relu": lambda z, slope: activations.leaky_relu(z, slope),
    "silu": lambda z, slope: activations.silu(z),
    "hardswish": lambda z, slope: activations.hardswish(z),
    "gelu": lambda z, slope: activations.gelu(z),
    "gelu_tanh": lambda z, slope: activations.gelu(z, approximate="tanh"),
}


def activation_of(module: nn.Module) -> tuple[str, float]:
    """(activation name, negative slope) of an activation module we fuse; TypeError naming
    any other. ``inplace`` is ignored: the fused output is a new tensor anyway."""
    for cls, name in _ACTIVATION_MODULES:
        if isinstance(module, cls):
            if name == "gelu" and module.approximate == "tanh":
                return "gelu_tanh", 0.0
            return name, float(module.negative_slope) if name == "leaky_relu" else 0.0
    raise TypeError(f"ConvBNAct2d: cannot fuse the activation {module!r}; expected None, "
                    "nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Hardswish or "
                    "nn.GELU")


class ConvBNAct2d(nn.Sequential):
    """Conv2d, an optional BatchNorm2d and an optional activation fused, with an optional
    residual input: ``forward(input, residual=None)`` returns act(bn(conv(input)) + residual).

    An nn.Sequential of (conv, bn or nn.Identity(), activation or nn.Identity()), so
    parameters, buffers and state_dict keys ("0.weight", "0.bias", "1.weight",
    "1.running_mean", ...) are those of ``nn.Sequential(conv, bn, act)`` and
    ``nn.Sequential(conv, act)`` (with Identity slots) and load both ways; only forward
    differs. activation: None, nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU,
    nn.Hardswish, nn.GELU (either approximation) or cnn's subclasses of those. The batch norm's
    own ``training`` flag picks the mode, as in the unfused sequence:
      training    conv with a statistics epilogue, finalize, normalize + residual +
                  activation (3 launches); running stats and num_batches_tracked updated as
                  torch.nn.BatchNorm2d does
      evaluation  batch norm folded into the conv epilogue with residual and activation
                  (1 launch)
      no bn       conv with residual and activation in its epilogue (1 launch)
    A cnn.SyncBatchNorm training in a process group syncs its statistics: fused for ReLU
    without a residual, else the unfused sequence.
    Input (N, C_in, H, W), NCHW or channels_last -> (N, C_out, OH, OW) in the same layout;
    residual: None or the output's shape and dtype, any layout.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d = None, activation: nn.Module = None):
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"{type(self).__name__}: expected an nn.Conv2d, got "
                            f"{type(conv).__name__}")
        if bn is not None and not isinstance(bn, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            raise TypeError(f"{type(self).__name__}: expected an nn.BatchNorm2d, got "
                            f"{type(bn).__name__}")
        if activation is not None:
            activation_of(activation)
        if bn is not None and bn.num_features != conv.out_channels:
            raise ValueError(
                f"{type(self).__name__}: the batch norm has {bn.num_features} features but the "
                f"conv has {conv.out_channels} output channels")
        super().__init__(conv, bn if bn is not None else nn.Identity(),
                         activation if activation is not None else nn.Identity())

    def forward(self, input: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        conv, bn = self[0], self[1]
        activation, slope = activation_of(self[2])
        padding = conv.padding
        if conv.padding_mode != "zeros":
            input = nn.functional.pad(input, conv._reversed_padding_repeated_twice,
                                      mode=conv.padding_mode)
            padding = 0
        conv_args = (conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups)
        if isinstance(bn, nn.Identity):
            return conv_act2d(input, *conv_args, activation=activation, negative_slope=slope,
                              residual=residual)
        batch_stats, running_mean, running_var, momentum, counter = batch_norm_mode(bn)
        group = sync_group(bn)  # a cnn.SyncBatchNorm training inside a process group
        if group is not None:
            return self._synced(input, residual, activation, slope, running_mean, running_var,
                                momentum, counter, group)
        return conv_bn_act2d(input, conv.weight, conv.bias, running_mean, running_var,
                             bn.weight, bn.bias, conv.stride, padding, conv.dilation,
                             conv.groups, training=batch_stats, momentum=momentum, eps=bn.eps,
                             num_batches_tracked=counter, activation=activation,
                             negative_slope=slope, residual=residual)

    def _synced(self, input, residual, activation, slope, running_mean, running_var, momentum,
                counter, group):
        """The training forward with statistics synced over the process group: the fused
        sync path (ReLU, no residual) or the unfused sequence."""
        conv, bn = self[0], self[1]
        padding = 0 if conv.padding_mode != "zeros" else conv.padding
        if activation == "relu" and residual is None:
            return sync_conv_bn_relu2d(input, conv.weight, conv.bias, running_mean, running_var,
                                       bn.weight, bn.bias, conv.stride, padding, conv.dilation,
                                       conv.groups, momentum, bn.eps, *group,
                                       num_batches_tracked=counter)
        z = sync_batch_norm(conv2d(input, conv.weight, conv.bias, conv.stride, padding,
                                   conv.dilation, conv.groups),
                            running_mean, running_var, bn.weight, bn.bias, momentum, bn.eps,
                            *group, num_batches_tracked=counter)
        if residual is not None:
            z = z + residual
        return _UNFUSED_ACTIVATIONS[activation](z, slope)


class ConvBNReLU2d(ConvBNAct2d):
    """Conv2d, BatchNorm2d and ReLU fused, built from existing modules as
    ``torch.ao.nn.intrinsic.ConvBnReLU2d(conv, bn, relu)`` is: ``ConvBNReLU2d(conv, bn)`` or
    ``ConvBNReLU2d(conv, bn, relu)``. torch's or cnn's modules both do. ``ConvBNAct2d`` with
    a batch norm and ReLU: state_dict keys those of ``nn.Sequential(conv, bn, relu)``;
    training 3 launches, evaluation 1; ``forward(input, residual=None)``.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, relu: nn.ReLU = None):
        if relu is not None and not isinstance(relu, nn.ReLU):
            raise TypeError(f"ConvBNReLU2d: expected an nn.ReLU, got {type(relu).__name__}")
        if not isinstance(bn, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            raise TypeError(
                f"ConvBNReLU2d: expected an nn.BatchNorm2d, got {type(bn).__name__}")
        super().__init__(conv, bn, relu if relu is not None else ReLU())


__all__ = ["ConvBNAct2d", "ConvBNReLU2d", "activation_of"]
