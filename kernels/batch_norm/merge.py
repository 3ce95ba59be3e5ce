"""Batch-norm statistics of one process as a single (count, mean, M2) triple per channel.

A synced batch norm merges the statistics of every process. Each process first folds its
per-tile partials (tiles, 3, C) (batch_norm_stats, or conv2d_forward's STATS epilogue) into
one row (3, C) with Chan's parallel formula
    n = na + nb,  d = mean_b - mean_a,  mean = mean_a + d * nb / n,
    M2 = M2a + M2b + d^2 * na * nb / n
(no E[x^2] - E[x]^2 cancellation). The rows of all processes, gathered into (world, 3, C),
are again partials that batch_norm_finalize merges in the same way: one collective a layer.
A row with count 0 (a process with an empty batch) leaves the merge unchanged.
"""
import torch
import triton
import triton.language as tl

from ..runtime import cdiv, next_power_of_2
from .forward import GPU_WARPS, REDUCE_BLOCK_C, REDUCE_BLOCK_T, _tl_acc


@triton.jit
def batch_norm_merge_kernel(
    stats_ptr, out_ptr,
    T, C,
    ACC_DTYPE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """out[{count, mean, M2}, c] from stats[t, {count, mean, M2}, c] over t < T.

    As batch_norm_finalize_kernel: each step merges BLOCK_T partials (count-weighted mean,
    M2 = sum M2_i + sum n_i (mean_i - mean)^2), then folds that block into the running total
    with Chan's pairwise formula."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = c < C
    n_acc = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
    mean_acc = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
    m2_acc = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        mask = (t < T)[:, None] & mask_c[None, :]
        rows = stats_ptr + t.to(tl.int64)[:, None] * 3 * C + c[None, :]
        cnt = tl.load(rows, mask=mask, other=0.0).to(ACC_DTYPE)
        mu = tl.load(rows + C, mask=mask, other=0.0).to(ACC_DTYPE)
        m2 = tl.load(rows + 2 * C, mask=mask, other=0.0).to(ACC_DTYPE)
        n_blk = tl.sum(cnt, axis=0)
        mean_blk = tl.sum(cnt * mu, axis=0) / tl.maximum(n_blk, 1.0)
        d_blk = tl.where(mask, mu - mean_blk[None, :], 0.0)
        m2_blk = tl.sum(m2, axis=0) + tl.sum(cnt * d_blk * d_blk, axis=0)
        n_new = n_acc + n_blk
        frac = tl.where(n_new > 0, n_blk / tl.maximum(n_new, 1.0), 0.0)
        delta = mean_blk - mean_acc
        mean_acc = mean_acc + delta * frac
        m2_acc = m2_acc + m2_blk + delta * delta * n_acc * frac
        n_acc = n_new
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
    block_c = min(REDUCE_BLOCK_C, next_power_of_2(c))
    block_t = min(REDUCE_BLOCK_T, next_power_of_2(tiles))
    batch_norm_merge_kernel[(cdiv(c, block_c),)](
        stats, out, tiles, c,
        ACC_DTYPE=_tl_acc(stats.dtype), BLOCK_T=block_t, BLOCK_C=block_c, num_warps=GPU_WARPS,
    )
    return out


__all__ = ["batch_norm_merge_stats", "batch_norm_merge_kernel"]
