"""nn.ConvTranspose2d whose forward runs the Triton kernels."""
import torch
from torch import nn

from .. import functional as F


def run_conv_transpose(module: nn.ConvTranspose1d | nn.ConvTranspose2d, conv_transpose,
                       input: torch.Tensor, output_size, torch_name: str) -> torch.Tensor:
    """module's transposed convolution of input by ``conv_transpose`` (cnn.functional's
    conv_transpose1d or conv_transpose2d); ``output_size`` picks the output_padding through
    torch's own ``_output_padding``; only 'zeros' padding, with torch's error otherwise."""
    if module.padding_mode != "zeros":
        raise ValueError(f"Only `zeros` padding mode is supported for {torch_name}")
    output_padding = module._output_padding(input, output_size, module.stride, module.padding,
                                            module.kernel_size, len(module.kernel_size),
                                            module.dilation)
    return conv_transpose(input, module.weight, module.bias, module.stride, module.padding,
                          output_padding, module.groups, module.dilation)


class ConvTranspose2d(nn.ConvTranspose2d):
    """Drop-in ``torch.nn.ConvTranspose2d``: same constructor, parameters, state_dict and repr.

    Input (N, C_in, H, W) or (C_in, H, W) -> output (N, C_out, H_out, W_out) or
    (C_out, H_out, W_out). ``output_size`` in forward picks the output_padding, as torch's does
    (its ``_output_padding``); only 'zeros' padding, as torch's.
    """

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        return run_conv_transpose(self, F.conv_transpose2d, input, output_size,
                                  "ConvTranspose2d")
