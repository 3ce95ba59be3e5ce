"""The one fast layout inside the implicit-GEMM convolutions: channels on the contiguous axis.

A GEMM tile wants its reduction axis contiguous, so its loads become 16-byte async copies into
shared memory. For a convolution that axis is the channel axis: activations (N, C, H, W) are
read as channels_last (NHWC in memory) and weights (C_out, C_in/g, KH, KW) as channels_last too,
which is (C_out, KH, KW, C_in/g) in memory. The launchers bring their operands into that layout
once (``to_channels_last``) and write results in the layout torch's rules give the caller.

A conversion is not free: it reads and writes the whole tensor. ``conversion_bytes`` counts
that traffic, so a report can set it beside the convolution's own.
"""
import torch


def is_channels_last_dense(t: torch.Tensor) -> bool:
    """Whether t (4D) already is a dense channels_last tensor: NHWC order, no gaps."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)


def to_channels_last(t: torch.Tensor) -> torch.Tensor:
    """t itself when it is dense channels_last, else a channels_last copy (same values)."""
    return t if is_channels_last_dense(t) else t.contiguous(memory_format=torch.channels_last)


def conversion_bytes(*tensors) -> int:
    """Bytes that ``to_channels_last`` moves for these tensors (read + write of each copy)."""
    return sum(2 * t.numel() * t.element_size() for t in tensors
               if t is not None and not is_channels_last_dense(t))


__all__ = ["is_channels_last_dense", "to_channels_last", "conversion_bytes"]
