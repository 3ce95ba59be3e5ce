"""Per-channel batch-norm statistics as (count, mean, M2) partials, and their merge.

Partials are a (tiles, 3, C) buffer: row t holds tile t's count, mean and M2 (the sum of squared
deviations from the tile's mean) of each channel. batch_norm_stats writes them, and so does
conv2d_forward's STATS epilogue (both through ``write_partial``), so fused conv + BN shares the
rest. They merge with Chan's parallel formula
    n = na + nb,  d = mean_b - mean_a,  mean = mean_a + d * nb / n,
    M2 = M2a + M2b + d^2 * na * nb / n
(no E[x^2] - E[x]^2 cancellation); a partial with count 0 leaves the merge unchanged.
"""
import triton
import triton.language as tl


@triton.jit
def channel_block(pid_c, C, BLOCK_C: tl.constexpr):
    """The channels c of channel block pid_c, and their mask c < C."""
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    return c, c < C


@triton.jit
def partial_rows(partial_ptr, t0, T, c, mask_c, C, ROWS: tl.constexpr, BLOCK_T: tl.constexpr):
    """Pointers to row 0 of partials t0 .. t0 + BLOCK_T - 1 of a (T, ROWS, C) buffer at the
    channels c (row r is r * C further), and the mask of those that exist."""
    t = t0 + tl.arange(0, BLOCK_T)
    mask = (t < T)[:, None] & mask_c[None, :]
    rows = partial_ptr + t.to(tl.int64)[:, None] * ROWS * C + c[None, :]
    return rows, mask


@triton.jit
def write_partial(stats_ptr, tile, vals, valid, mask_rows, c, mask_c, C):
    """stats[tile, {count, mean, M2}, c] of a (rows x channels) tile: vals, zero where not
    valid (mask_rows[:, None] & mask_c[None, :]); count is the number of live rows."""
    count = tl.sum(mask_rows.to(vals.dtype), axis=0)
    mean = tl.sum(vals, axis=0) / count
    dev = tl.where(valid, vals - mean[None, :], 0.0)
    m2 = tl.sum(dev * dev, axis=0)
    row = stats_ptr + tile.to(tl.int64) * 3 * C + c
    tl.store(row, tl.zeros_like(mean) + count, mask=mask_c)
    tl.store(row + C, mean, mask=mask_c)
    tl.store(row + 2 * C, m2, mask=mask_c)


@triton.jit
def merge_partials(stats_ptr, T, C, c, mask_c, ACC_DTYPE: tl.constexpr, BLOCK_T: tl.constexpr,
                   BLOCK_C: tl.constexpr):
    """(count, mean, M2) of the channels c over the partials stats[t < T] (T, 3, C).

    Each step takes BLOCK_T partials at once: their merged count, mean (count-weighted) and
    M2 = sum M2_i + sum n_i (mean_i - mean)^2 (exact, no cancellation), then folds that block
    into the running total with Chan's pairwise formula."""
    n_acc = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
    mean_acc = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
    m2_acc = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
    for t0 in range(0, T, BLOCK_T):
        rows, mask = partial_rows(stats_ptr, t0, T, c, mask_c, C, 3, BLOCK_T)
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
    return n_acc, mean_acc, m2_acc


__all__ = ["channel_block", "merge_partials", "partial_rows", "write_partial"]
