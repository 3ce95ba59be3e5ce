"""nn.Conv2d whose forward runs the Triton kernels."""
import torch
from torch import nn

from .. import functional as F


def run_conv(module: nn.Conv1d | nn.Conv2d, conv, input: torch.Tensor) -> torch.Tensor:
    """module's convolution of input by ``conv`` (cnn.functional's conv1d or conv2d). Non-'zeros'
    padding modes pad with torch's ``F.pad`` first, as torch's modules do."""
    if module.padding_mode != "zeros":
        input = nn.functional.pad(input, module._reversed_padding_repeated_twice,
                                  mode=module.padding_mode)
        return conv(input, module.weight, module.bias, module.stride, 0, module.dilation,
                    module.groups)
    return conv(input, module.weight, module.bias, module.stride, module.padding, module.dilation,
                module.groups)


class Conv2d(nn.Conv2d):
    """Drop-in ``torch.nn.Conv2d``: same constructor, parameters, state_dict and repr.

    Input (N, C_in, H, W) or (C_in, H, W) -> output (N, C_out, OH, OW) or (C_out, OH, OW).
    Non-'zeros' padding modes pad with torch's ``F.pad`` first, as torch.nn.Conv2d does.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return run_conv(self, F.conv2d, input)
