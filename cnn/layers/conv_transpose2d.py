"""nn.ConvTranspose2d whose forward runs the Triton kernels."""
import torch
from torch import nn

from .. import functional as F


class ConvTranspose2d(nn.ConvTranspose2d):
    """Drop-in ``torch.nn.ConvTranspose2d``: same constructor, parameters, state_dict and repr.

    Input (N, C_in, H, W) or (C_in, H, W) -> output (N, C_out, H_out, W_out) or
    (C_out, H_out, W_out). ``output_size`` in forward picks the output_padding, as torch's does
    (its ``_output_padding``); only 'zeros' padding, as torch's.
    """

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                  output_padding, self.groups, self.dilation)
