"""nn.Conv1d and nn.ConvTranspose1d whose forwards run the Triton kernels (the 2-D ones, on a
unit-height view: cnn/functional/conv1d.py)."""
import torch
from torch import nn

from .. import functional as F
from .conv2d import run_conv
from .conv_transpose2d import run_conv_transpose


class Conv1d(nn.Conv1d):
    """Drop-in ``torch.nn.Conv1d``: same constructor, parameters, state_dict and repr.

    Input (N, C_in, L) or (C_in, L) -> output (N, C_out, L_out) or (C_out, L_out).
    Non-'zeros' padding modes pad with torch's ``F.pad`` first, as torch.nn.Conv1d does.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return run_conv(self, F.conv1d, input)


class ConvTranspose1d(nn.ConvTranspose1d):
    """Drop-in ``torch.nn.ConvTranspose1d``: same constructor, parameters, state_dict and repr.

    Input (N, C_in, L) or (C_in, L) -> output (N, C_out, L_out) or (C_out, L_out).
    ``output_size`` in forward picks the output_padding, as torch's does; only 'zeros' padding.
    """

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        return run_conv_transpose(self, F.conv_transpose1d, input, output_size,
                                  "ConvTranspose1d")
