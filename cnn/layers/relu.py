"""nn.ReLU whose forward runs the Triton kernel."""
import torch
from torch import nn

from ..functional.relu import relu


class ReLU(nn.ReLU):
    """Drop-in ``torch.nn.ReLU`` (``inplace`` accepted): any shape, output in input's layout."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return relu(input, inplace=self.inplace)


__all__ = ["ReLU"]
