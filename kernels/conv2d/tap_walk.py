"""The tap-major K walk shared by the forward and the input gradient.

Their reduction runs over (tap row, tap column, block of BK channels), channels innermost, in one
flat loop (so Triton pipelines it as one GEMM K loop). A step moves to the next channel block;
past the last block, to the first block of the next tap in the row; past the row's last tap, to
the first tap of the next row. Each operand's offset moves by one of three precomputed scalar
steps (``walk_steps``), so the loop does no multiply, and each row's bounds are one bit of its
tap bits (``cnn.kernels.conv2d.tap_bits``), the bit moving with the tap.
"""
import triton
import triton.language as tl


@triton.jit
def walk_steps(tap_h, tap_w, c, back, taps_per_row, BK: tl.constexpr):
    """An operand offset's three steps: (next channel block, next tap, next tap row), for an
    operand whose offset moves by ``tap_h`` per tap row, ``tap_w`` per tap of a row and ``c``
    per channel; ``back`` channels from the last block of a tap to its first."""
    next_c = BK * c
    next_tap = tap_w - back * c
    next_row = tap_h - (taps_per_row - 1) * tap_w - back * c
    return next_c, next_tap, next_row


@triton.jit
def next_step(c0, tap_bit, tap_col, tap_row, a_step, b_step, channels, taps_per_row,
              a_next_c, a_next_tap, a_next_row, b_next_c, b_next_tap, b_next_row,
              BK: tl.constexpr, COUNT_ROWS: tl.constexpr):
    """The walk's next step: (c0, tap_bit, tap_col, tap_row, a_step, b_step) after it. c0 is the
    first channel of the block, tap_bit the tap's bit in a row's tap bits; tap_row is counted
    only with COUNT_ROWS (the loops that check bounds without tap bits)."""
    c0 += BK
    next_tap = c0 >= channels
    c0 = tl.where(next_tap, 0, c0)
    tap_bit = tl.where(next_tap, tap_bit << 1, tap_bit)
    tap_col = tl.where(next_tap, tap_col + 1, tap_col)
    next_row = tap_col >= taps_per_row
    tap_col = tl.where(next_row, 0, tap_col)
    if COUNT_ROWS:
        tap_row = tl.where(next_row, tap_row + 1, tap_row)
    a_step += tl.where(next_row, a_next_row, tl.where(next_tap, a_next_tap, a_next_c))
    b_step += tl.where(next_row, b_next_row, tl.where(next_tap, b_next_tap, b_next_c))
    return c0, tap_bit, tap_col, tap_row, a_step, b_step


@triton.jit
def load_step_tiles(a_ptrs, b_ptrs, a_step, b_step, row_ok, mask_n, offs_c, c_left,
                    EVEN_C: tl.constexpr):
    """A step's operand tiles: a (rows, channels) at a_ptrs + a_step where row_ok, b (channels,
    columns) at b_ptrs + b_step where mask_n; with EVEN_C False, only the first c_left
    channels (a partial last block)."""
    if EVEN_C:
        a = tl.load(a_ptrs + a_step, mask=row_ok, other=0.0)
        b = tl.load(b_ptrs + b_step, mask=mask_n[None, :], other=0.0)
    else:
        c_ok = offs_c < c_left
        a = tl.load(a_ptrs + a_step, mask=row_ok & c_ok[None, :], other=0.0)
        b = tl.load(b_ptrs + b_step, mask=c_ok[:, None] & mask_n[None, :], other=0.0)
    return a, b


__all__ = ["load_step_tiles", "next_step", "walk_steps"]
