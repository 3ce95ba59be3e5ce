"""The one fast layout inside the implicit-GEMM convolutions: channels on the contiguous axis.

A GEMM tile wants its reduction axis contiguous, so its loads become 16-byte async copies into
shared memory. For a convolution that axis is the channel axis: activations (N, C, H, W) are
read as channels_last (NHWC in memory) and weights (C_out, C_in/g, KH, KW) as channels_last too,
which is (C_out, KH, KW, C_in/g) in memory. The launchers bring their operands into that layout
once (``to_channels_last``) and write results in the layout torch's rules give the caller.
Two exceptions. The input gradient reduces over the output channels, and a TF32 tile (unlike a
16-bit one, which the MMA reads transposed for free) needs that axis contiguous, so under TF32
it reads the weight as (C_in, KH, KW, C_out) in memory (``output_channels_last``). An RGB first
layer's forward reads x padded to 4 channels, whole pixels as one vector each
(``conv2d_forward.pack_pixels``).

A conversion is not free: it reads and writes the whole tensor. ``conversion_bytes`` counts
that traffic, so a report can set it beside the convolution's own.
"""
import torch


def is_channels_last_dense(t: torch.Tensor) -> bool:
    """Whether t (4D) already is a dense channels_last tensor: NHWC order, no gaps."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)


def channels_last_strides(shape) -> tuple:
    """The strides of a dense channels_last tensor of this (N, C, H, W) shape."""
    _, c, _, w = shape
    return (shape[2] * w * c, 1, w * c, c)


def to_channels_last(t: torch.Tensor) -> torch.Tensor:
    """t as a dense channels_last tensor (a copy only when it is not one) whose strides are the
    canonical ones even on size-1 dims. torch ignores the stride of a size-1 dim, so a (C_out,
    C_in, 1, 1) weight is already channels_last with strides (C_in, 1, 1, 1); a kernel given
    those cannot prove its tap offsets 16-byte aligned and falls back to narrow loads."""
    if not is_channels_last_dense(t):
        return t.contiguous(memory_format=torch.channels_last)
    canonical = channels_last_strides(t.shape)
    return t if t.stride() == canonical else t.as_strided(t.shape, canonical)


def output_channels_last(weight: torch.Tensor) -> torch.Tensor:
    """A (C_out, C_in, KH, KW) weight with C_out on the contiguous axis, (C_in, KH, KW, C_out)
    in memory (a copy unless it already is): the input gradient's reduction axis, which a TF32
    tile needs contiguous."""
    if weight.stride(0) == 1 and weight.permute(1, 2, 3, 0).is_contiguous():
        return weight
    return weight.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2)


def conversion_bytes(*tensors) -> int:
    """Bytes a layout conversion of these tensors moves: each is read and written once."""
    return sum(2 * t.numel() * t.element_size() for t in tensors if t is not None)


__all__ = ["channels_last_strides", "is_channels_last_dense", "output_channels_last",
           "to_channels_last",
           "conversion_bytes"]
