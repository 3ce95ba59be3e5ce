"""Storing an implicit GEMM's result tile (pixels x channels) into an NCHW or channels_last
tensor without holding a pointer per element.

In channels_last memory the tile's channel axis is contiguous and Triton stores 16-byte vectors
along it on its own. In NCHW memory the pixel axis is the contiguous one, but only within an
image plane, which Triton cannot prove from ``n * sn + oh * sh + ow``. It then keeps a 64-bit
pointer per element (64 per thread for a 128x128 tile over 8 warps, beside the 64 accumulator
registers: the epilogue spills) and stores 2 bytes at a time. Two remedies:

    row vectors   when every plane holds a multiple of ROW_VEC pixels, each aligned group of
                  ROW_VEC rows lies in one plane, at consecutive offsets starting at a multiple
                  of ROW_VEC (and the channel stride, the plane size, is one too); said to
                  Triton as hints, the store becomes ROW_VEC-element vectors with a pointer each
    column halves otherwise (a 7x7 plane, a stride-2 phase of dx), a tile 64 channels or wider
                  is stored half by half, so only half of its pointers are live at once
"""
import torch
import triton
import triton.language as tl


def row_vector(plane_pixels: int, element_size: int, contiguous_rows: bool = True) -> int:
    """ROW_VEC for an NCHW store whose rows are ``plane_pixels`` consecutive pixels per image:
    the largest power of two dividing the plane, up to a 16-byte vector; 1 when the rows are
    not consecutive pixels of the plane (``contiguous_rows`` False)."""
    vec = 1
    while contiguous_rows and vec * element_size < 16 and plane_pixels % (2 * vec) == 0:
        vec *= 2
    return vec


def nchw_row_vector(t: torch.Tensor, contiguous_rows: bool = True) -> int:
    """ROW_VEC for storing into ``t``: 1 for channels_last (the columns vectorise there), else
    ``row_vector`` of its (H, W) plane. ``t`` must be a dense tensor the launcher allocated."""
    if t.is_contiguous():
        return row_vector(t.shape[2] * t.shape[3], t.element_size(), contiguous_rows)
    return 1


@triton.jit
def store_tile(ptr, vals, row_off, col_off, offs_m, M, mask_m, mask_n,
               ROW_VEC: tl.constexpr, CHANNELS_LAST: tl.constexpr):
    """ptr[row_off[m] + col_off[n]] = vals[m, n] where mask_m[m] & mask_n[n].

    vals: (BLOCK_M, BLOCK_N), in ptr's dtype; row_off, offs_m, mask_m: (BLOCK_M,); col_off,
    mask_n: (BLOCK_N,). ROW_VEC > 1 (an NCHW store, see ``row_vector``): offs_m are the rows'
    indices, M a multiple of ROW_VEC, and mask_m is offs_m < M.
    CHANNELS_LAST: col_off is contiguous, so a plain store vectorises."""
    BLOCK_M: tl.constexpr = vals.shape[0]
    BLOCK_N: tl.constexpr = vals.shape[1]
    if ROW_VEC > 1:
        off = row_off[:, None] + col_off[None, :]
        off = tl.max_contiguous(tl.multiple_of(off, [ROW_VEC, 1]), [ROW_VEC, 1])
        # The same mask as offs_m < M, in a form whose constancy over each group Triton sees.
        rows_ok = (offs_m // ROW_VEC) < (M // ROW_VEC)
        tl.store(ptr + off, vals, mask=rows_ok[:, None] & mask_n[None, :])
    elif not CHANNELS_LAST and BLOCK_N >= 64:
        HALF: tl.constexpr = BLOCK_N // 2
        # Column j of a half is column h * HALF + j of the tile.
        left, right = tl.split(tl.permute(tl.reshape(vals, (BLOCK_M, 2, HALF)), (0, 2, 1)))
        col_l, col_r = tl.split(tl.permute(tl.reshape(col_off, (2, HALF)), (1, 0)))
        ok_l, ok_r = tl.split(tl.permute(tl.reshape(mask_n, (2, HALF)), (1, 0)))
        tl.store(ptr + (row_off[:, None] + col_l[None, :]), left,
                 mask=mask_m[:, None] & ok_l[None, :])
        tl.store(ptr + (row_off[:, None] + col_r[None, :]), right,
                 mask=mask_m[:, None] & ok_r[None, :])
    else:
        tl.store(ptr + (row_off[:, None] + col_off[None, :]), vals,
                 mask=mask_m[:, None] & mask_n[None, :])


__all__ = ["nchw_row_vector", "row_vector", "store_tile"]
