"""What the elementwise kernels (relu, activation) share: how a tensor of any shape and strides
is walked.

Dense tensors that share strides (contiguous, channels_last, any permutation of either) are
walked as flat storage; otherwise each element's offsets come from up to four sizes and
strides (higher-rank non-dense tensors are made contiguous first by the launcher).
"""
import torch
import triton
import triton.language as tl  # noqa: F401  (the interpreter needs it beside every kernel)

from .runtime import INTERPRET, next_power_of_2

GPU_BLOCK = 1024
BLOCK = 65536 if INTERPRET else GPU_BLOCK  # the interpreter's cost is per program instance
GPU_WARPS = 4
MAX_DIMS = 4  # up to 4 sizes and strides per tensor in the strided walk


@triton.jit
def strided_offsets(idx, s0, s1, s2, s3, S1, S2, S3):
    """Storage offsets of logical (row-major) indices idx of a 4D tensor."""
    i3 = idx % S3
    i2 = (idx // S3) % S2
    i1 = (idx // (S3 * S2)) % S1
    i0 = idx // (S3 * S2 * S1)
    return i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3


def block_for(numel: int) -> int:
    """The tile for numel elements: BLOCK compiled (one compile for every size); under the
    interpreter, whose every operation costs in proportion to the tile, no more than needed
    (a 12-element tensor in a 65536 tile costs 30 ms a launch, in a 16 tile 1 ms)."""
    return min(BLOCK, next_power_of_2(numel)) if INTERPRET else BLOCK


def is_dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense: the elements fill [data_ptr, data_ptr + numel) exactly."""
    expected = 1
    for stride, size in sorted((st, s) for s, st in zip(t.shape, t.stride(), strict=True)
                               if s != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def dims4(t: torch.Tensor):
    """(strides padded to 4, sizes padded to 4) of a tensor of at most 4 dimensions."""
    pad = MAX_DIMS - t.dim()
    return (0,) * pad + tuple(t.stride()), (1,) * pad + tuple(t.shape)


__all__ = ["BLOCK", "GPU_BLOCK", "GPU_WARPS", "MAX_DIMS", "block_for", "strided_offsets",
           "is_dense", "dims4"]
