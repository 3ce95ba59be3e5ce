"""nn pooling modules whose forward runs the Triton kernels; everything else is torch's."""
import torch
from torch import nn

from .. import functional as F


class MaxPool2d(nn.MaxPool2d):
    """Drop-in ``torch.nn.MaxPool2d``: (N, C, H, W) or (C, H, W) -> (N, C, OH, OW) or
    (C, OH, OW), plus int64 indices when return_indices."""

    def forward(self, input: torch.Tensor):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(nn.AvgPool2d):
    """Drop-in ``torch.nn.AvgPool2d``: (N, C, H, W) or (C, H, W) -> (N, C, OH, OW) or
    (C, OH, OW)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """Drop-in ``torch.nn.AdaptiveAvgPool2d``: (N, C, H, W) or (C, H, W) -> (N, C, *output_size)
    or (C, *output_size); ``output_size=1`` is global average pooling."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(input, self.output_size)


class AdaptiveMaxPool2d(nn.AdaptiveMaxPool2d):
    """Drop-in ``torch.nn.AdaptiveMaxPool2d``: (N, C, H, W) or (C, H, W) -> (N, C, *output_size)
    or (C, *output_size), plus int64 indices when return_indices."""

    def forward(self, input: torch.Tensor):
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)
