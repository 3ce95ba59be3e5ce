"""nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Hardswish and nn.GELU whose forward runs the Triton
kernel (cnn.functional.activation)."""
import torch
from torch import nn

from ..functional.activation import gelu, hardswish, leaky_relu, relu6, silu


class ReLU6(nn.ReLU6):
    """Drop-in ``torch.nn.ReLU6`` (``inplace`` accepted): any shape, output in input's layout."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return relu6(input, inplace=self.inplace)


class LeakyReLU(nn.LeakyReLU):
    """Drop-in ``torch.nn.LeakyReLU`` (``negative_slope``, ``inplace``)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return leaky_relu(input, self.negative_slope, self.inplace)


class SiLU(nn.SiLU):
    """Drop-in ``torch.nn.SiLU`` (``inplace`` accepted)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return silu(input, inplace=self.inplace)


class Hardswish(nn.Hardswish):
    """Drop-in ``torch.nn.Hardswish`` (``inplace`` accepted)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return hardswish(input, inplace=self.inplace)


class GELU(nn.GELU):
    """Drop-in ``torch.nn.GELU`` (``approximate`` 'none' or 'tanh')."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return gelu(input, approximate=self.approximate)


__all__ = ["ReLU6", "LeakyReLU", "SiLU", "Hardswish", "GELU"]
