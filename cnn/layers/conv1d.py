"""nn.Conv1d and nn.ConvTranspose1d whose forwards run the Triton kernels (the 2-D ones, on a
unit-height view: cnn/functional/conv1d.py)."""
import torch
from torch import nn

from .. import functional as F


class Conv1d(nn.Conv1d):
    """Drop-in ``torch.nn.Conv1d``: same constructor, parameters, state_dict and repr.

    Input (N, C_in, L) or (C_in, L) -> output (N, C_out, L_out) or (C_out, L_out).
    Non-'zeros' padding modes pad with torch's ``F.pad`` first, as torch.nn.Conv1d does.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":
            padded = nn.functional.pad(input, self._reversed_padding_repeated_twice,
                                       mode=self.padding_mode)
            return F.conv1d(padded, self.weight, self.bias, self.stride, 0, self.dilation,
                            self.groups)
        return F.conv1d(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class ConvTranspose1d(nn.ConvTranspose1d):
    """Drop-in ``torch.nn.ConvTranspose1d``: same constructor, parameters, state_dict and repr.

    Input (N, C_in, L) or (C_in, L) -> output (N, C_out, L_out) or (C_out, L_out).
    ``output_size`` in forward picks the output_padding, as torch's does; only 'zeros' padding.
    """

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose1d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 1, self.dilation)
        return F.conv_transpose1d(input, self.weight, self.bias, self.stride, self.padding,
                                  output_padding, self.groups, self.dilation)
