"""nn.Conv2d whose forward runs the Triton kernels."""
import torch
from torch import nn

from .. import functional as F


class Conv2d(nn.Conv2d):
    """Drop-in ``torch.nn.Conv2d``: same constructor, parameters, state_dict and repr.

    Input (N, C_in, H, W) or (C_in, H, W) -> output (N, C_out, OH, OW) or (C_out, OH, OW).
    Non-'zeros' padding modes pad with torch's ``F.pad`` first, as torch.nn.Conv2d does.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":
            padded = nn.functional.pad(input, self._reversed_padding_repeated_twice,
                                       mode=self.padding_mode)
            return F.conv2d(padded, self.weight, self.bias, self.stride, 0, self.dilation,
                            self.groups)
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)
