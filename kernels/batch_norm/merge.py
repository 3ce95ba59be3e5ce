"""Batch-norm statistics of one process as a single (count, mean, M2) triple per channel.

A synced batch norm merges the statistics of every process. Each process first folds its
per-tile partials (tiles, 3, C) (batch_norm_stats, or conv2d_forward's STATS epilogue) into
one row (3, C) with Chan's parallel formula (``cnn.kernels.batch_norm.statistics``). The rows of
all processes, gathered into (world, 3, C), are again partials that batch_norm_finalize merges
in the same way: one collective a layer.
A row with count 0 (a process with an empty batch) leaves the merge unchanged.
"""
import torch
import triton
import triton.language as tl

from ..runtime import accumulator_dtype
from .forward import reduce_launch
from .statistics import channel_block, merge_partials


@triton.jit
def batch_norm_merge_kernel(
    stats_ptr, out_ptr,
    T, C,
    ACC_DTYPE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """out[{count, mean, M2}, c] from stats[t, {count, mean, M2}, c] over t < T, merged as
    batch_norm_finalize_kernel merges them (``merge_partials``)."""
    c, mask_c = channel_block(tl.program_id(0), C, BLOCK_C)
    n_acc, mean_acc, m2_acc = merge_partials(stats_ptr, T, C, c, mask_c, ACC_DTYPE, BLOCK_T,
                                             BLOCK_C)
    tl.store(out_ptr + c, n_acc, mask=mask_c)
    tl.store(out_ptr + C + c, mean_acc, mask=mask_c)
    tl.store(out_ptr + 2 * C + c, m2_acc, mask=mask_c)


def batch_norm_merge_stats(stats: torch.Tensor, out: torch.Tensor = None) -> torch.Tensor:
    """Partials (tiles, 3, C) -> one (3, C) row of (count, mean, M2) in the partials' dtype,
    written into ``out`` (3, C) when given (e.g. a collective's send buffer). No tiles (an
    empty batch) gives count 0, mean 0, M2 0."""
    tiles, _, c = stats.shape
    if out is None:
        out = torch.empty((3, c), device=stats.device, dtype=stats.dtype)
    grid, options = reduce_launch(tiles, c)
    batch_norm_merge_kernel[grid](stats, out, tiles, c, ACC_DTYPE=accumulator_dtype(stats.dtype),
                                  **options)
    return out


__all__ = ["batch_norm_merge_stats", "batch_norm_merge_kernel"]
